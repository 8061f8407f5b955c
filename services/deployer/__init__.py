"""The deployer service. Applies the inference Services, ConfigMaps and Deployments/StatefulSets of
a plan on its nodes and reports InferenceReady or InferenceFailed with the real reason.
"""
