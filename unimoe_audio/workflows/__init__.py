"""The top layer: workflows that compose training and evaluation.

    quickstart   the tiny curriculum, sample clips, evaluation and routing (`unimoe-audio quickstart`)
    reproduce    a recipe with its baselines, every system evaluated, a results report
    checkpoints  every kept checkpoint of a stage exported and judged (`unimoe-audio eval-checkpoints`)

`train/` and `eval/` never import from here; the CLI and the server do.
"""
