"""Tests against a real SLURM and Apptainer (markers slurm, container)."""
