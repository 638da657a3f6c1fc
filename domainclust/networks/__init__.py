"""Networks: backbones with their stems, fixed front-ends, the DeepCluster model, checkpoints and exported backbones."""
