"""The fine-tuning job that runs inside tuning pods: Kaito's ``training_config.yaml`` parsed and
checked (``config``), the dataset found and converted to TRL's formats (``data``), LoRA/QLoRA
training with TRL's SFTTrainer (``train``), progress for the tuner (``progress``) and the entry
point (``cli``); and the Job's other containers: the ``data-downloader`` (``download``) and the
adapter ``pusher`` (``pusher``). Only ``config``, ``progress``, ``download`` and ``pusher``
import without torch."""
