"""Kaito's well-known label and annotation keys (reference 1.7), in one place for every service."""

WORKSPACE_LABEL = "kaito.sh/workspace"
WORKSPACE_NAMESPACE_LABEL = "kaito.sh/workspacenamespace"
HASH_ANNOTATION = "workspace.kaito.io/hash"
REVISION_ANNOTATION = "workspace.kaito.io/revision"
REVISION_NAME_LABEL = "workspace.kaito.io/name"
ENABLE_LB_ANNOTATION = "kaito.sh/enablelb"
IMAGE_FAMILY_ANNOTATION = "kaito.sh/node-image-family"
