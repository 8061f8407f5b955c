"""The tuner service. Runs a plan's fine-tuning Job, from input data to a pushed adapter image, and
reports TuningStarted, TuningProgress, TuningSucceeded or TuningFailed.
"""
