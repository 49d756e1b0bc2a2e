"""Reports on trained models: evaluation, model cards, recipe comparisons, engine benchmarks."""
