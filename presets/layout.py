"""Where the runtime images expect things (Kaito's layout, reference 2.5 and 5.4): the planner
writes these paths into command lines, the deployer and tuner mount volumes there."""

HTTP_PORT = 5000
TORCH_PORT = 29500  # torchrun's rendezvous port; Kaito's Services expose it (seeds: 29500/TCP)
RAY_PORT = 6379
CONFIG_DIR = "/mnt/config"
INFERENCE_CONFIG_KEY = "inference_config.yaml"
TRAINING_CONFIG_KEY = "training_config.yaml"
ADAPTERS_DIR = "/mnt/adapter"
DATA_DIR = "/mnt/data"
RESULTS_DIR = "/mnt/results"
# The trainer writes it into its output directory once the adapter is saved; the pusher waits.
COMPLETION_MARKER = "fine_tuning_completed.txt"
VLLM_WEIGHTS = "/workspace/vllm/weights"
TFS_WEIGHTS = "/workspace/tfs/weights"
# Models Kaiten builds itself (tiny-chat): a weights "image" on this pseudo-registry is made by
# ``python -m presets.tiny DEST --store`` (copied from the local model store) instead of pulled.
BUILTIN_REGISTRY = "builtin.kaiten.dev"
