"""The development cluster: an emulator of the Kubernetes REST API that the official clients and
kubectl reach over HTTP through a kubeconfig. It backs the embedded local stack (`kaiten cluster`)
and the tests. It is not a production API server: state is one process's memory (optionally a
file), there is no authentication, and its controllers only simulate what kubelet would do."""
