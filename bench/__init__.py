"""Benchmarks: each module measures one component against a bare baseline (`make bench`)."""

from __future__ import annotations
