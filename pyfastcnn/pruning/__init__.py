"""Pruning: criteria, structures, schedules, masks, conversion to sparse modules (in progress)."""
