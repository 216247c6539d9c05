"""The local cluster's API server: HTTPS, the paths kubectl and the kubernetes client use."""
