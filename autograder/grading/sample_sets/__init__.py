"""Sample submissions per assignment (problem 3's live in ..samples): each module defines SAMPLES."""
