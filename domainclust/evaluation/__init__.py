"""Evaluation of pretrained features on labelled data.

k-NN and linear probes on frozen layers, cluster/label agreement, the low-shot experiment against
raw pixels, channel statistics and random initialisation, and PASCAL VOC 2007 multi-label classification. Every entry point takes a
checkpoint (or run dir, or exported backbone) and a labelled TileStore, and returns a data class
that prints as a table and serialises to JSON.
"""

from domainclust.evaluation.data import Split, make_split, split_indices, store_labels
from domainclust.evaluation.lowshot.fewshot import low_shot
from domainclust.evaluation.lowshot.finetune import FinetuneSettings
from domainclust.evaluation.lowshot.result import LowShotResult
from domainclust.evaluation.models import Trained, load_trained
from domainclust.evaluation.probes.clusters import (
    ClusterEvalResult,
    evaluate_clusters,
    intra_class_edge_ratio,
    nmi_to_labels,
)
from domainclust.evaluation.probes.knn import KnnResult, embed_store, evaluate_knn, knn_accuracy
from domainclust.evaluation.probes.linear import LinearProbeResult, evaluate_linear
from domainclust.evaluation.voc.layout import (
    mean_average_precision,
    read_voc,
    voc07_average_precision,
)
from domainclust.evaluation.voc.protocols import VocResult, VocSettings, voc_classification

__all__ = [
    "ClusterEvalResult", "FinetuneSettings", "KnnResult", "LinearProbeResult", "LowShotResult",
    "Split", "Trained", "VocResult", "VocSettings", "embed_store", "evaluate_clusters",
    "evaluate_knn", "evaluate_linear", "intra_class_edge_ratio", "knn_accuracy", "load_trained",
    "low_shot", "make_split", "mean_average_precision", "nmi_to_labels", "read_voc",
    "split_indices", "store_labels", "voc07_average_precision", "voc_classification",
]
