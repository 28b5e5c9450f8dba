"""Iteration-level scheduling policies: one file each over the interface in `policies.base`."""

from policies.base import Decision, Padding, Policy, Preemption, RequestView, SchedulerView

__all__ = ["Decision", "Padding", "Policy", "Preemption", "RequestView", "SchedulerView"]
