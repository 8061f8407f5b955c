"""The fine-tuning job that runs inside tuning pods: Kaito's ``training_config.yaml`` parsed and
checked (``config``), the dataset found and converted to TRL's formats (``data``), LoRA/QLoRA
training with TRL's SFTTrainer (``train``), progress for the tuner (``progress``) and the entry
point (``cli``). Only ``config`` and ``progress`` import without torch."""
