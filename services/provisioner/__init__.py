"""The provisioner service. Finds or provisions the GPU nodes a plan needs (Karpenter NodeClaims,
AKS agent pools, existing nodes) and publishes ResourcesReady, ResourcesPending or
ResourcesFailed.
"""
