"""Processing provider and algorithms of OptSAR Fusion (a thin skin over optsar_plugin)."""
