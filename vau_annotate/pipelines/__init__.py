"""User-facing jobs, one module each; they orchestrate annotate/ building blocks over records."""
