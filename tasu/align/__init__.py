"""Text-only alignment: CTC posterior simulation (CPS) and posterior compression (PSD)."""
