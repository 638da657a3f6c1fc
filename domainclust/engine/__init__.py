"""The DeepCluster epoch and its stages: features, descriptors, sampling, staging, augmentation, training, continued pretraining."""
