//! Container runtime that runs inside the berth guest: overlay layers, namespaces, cgroup v2
