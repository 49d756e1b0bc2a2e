"""The team service: Hone's engine inside Ray Serve replicas, behind an HTTP API (`hone serve`).

`api` (wire structs and checks) and `batch` (requests through the engine) are torch- and Ray-free;
`app` is the Ray Serve deployment; `bench` is `hone bench serve`.
"""
