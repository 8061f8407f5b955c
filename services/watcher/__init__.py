"""The watcher service. Watches Workspaces and turns their changes into
WorkspaceObserved/WorkspaceDeleting events; writes conditions reported by every service to
Workspace status. The only service that reads and writes Workspace objects.
"""
