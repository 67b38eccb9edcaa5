"""Sample submissions per assignment: each module defines SAMPLES, and may define ADVERSARIAL and GPU_FAULTS."""
