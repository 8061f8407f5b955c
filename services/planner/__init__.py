"""The planner service. Turns a WorkspaceObserved event and the preset catalog into a persisted
plan (node count, GPUs, runtime command) and publishes PlanReady or PlanRejected.
"""
