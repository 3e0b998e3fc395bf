"""Every file and folder name of a run directory and of a sweep folder: the one place they
are spelled."""

import re


CONFIG_FILE = "config.json"
LOCK_FILE = "run.lock"
MANIFEST_FILE = "manifest.json"
LEVEL_FORMAT = 2  # summaries of levels with a manifest
IMP_KIND = "imp"
MASK_FILE = "mask.npz"
PARAMS_FILE = "final_params.npz"
BATCH_STATS_FILE = "final_batch_stats.npz"
LOGITS_FILE = "test_logits.npy"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
RESULTS_JSON, RESULTS_CSV = "results.json", "results.csv"
TEST_LABELS_FILE = "test_labels.npy"
RESULT_FIELDS = (
    "kind", "level", "seed", "density", "final_test_accuracy", "final_test_loss",
    "best_test_accuracy", "final_val_accuracy", "final_val_loss", "early_stop_step",
    "early_stop_val_loss", "early_stop_test_accuracy", "start_step", "end_step",
)

LEVELS_DIR, BRANCHES_DIR, REWIND_DIR, PERIODIC_DIR, TRASH_DIR = "levels", "branches", "rewind", "checkpoints", ".trash"
REPORT_FILE = "report.md"
LEVEL_PATTERN = re.compile(r"level_(\d+)$")

# What instability_sweep (and the IMP lineages it runs) writes in its folder, so that
# --overwrite deletes these and nothing else.
SWEEP_FILES = (CONFIG_FILE, RESULTS_JSON, RESULTS_CSV, "curves.npz", "instability_vs_k.png", "error_curves.png")
SWEEP_DIRS = (PERIODIC_DIR, REWIND_DIR, "points", TRASH_DIR)
SWEEP_POINTS_DIR = "points"
SWEEP_IMP_DIR = re.compile(r"imp_k\d{6}$")
SWEEP_TMP = re.compile(r"^\.(" + "|".join(re.escape(n) for n in SWEEP_FILES) + r")\..*\.tmp$")


def sweep_imp_dir(k: int) -> str:
    """The folder of a sweep's IMP lineage rewound to ``k``."""
    return f"imp_k{int(k):06d}"
