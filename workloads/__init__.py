"""Workloads: synthetic generators and trace readers, each producing a list of RequestSpec."""
