"""Review: a run's epochs compared in fixed-seed X/Y grids rendered by the host's own txt2img.

    spec        what a grid is (columns of LoRA epochs plus a baseline, rows of prompts or weights,
                seeds, the txt2img settings) and the one render job a cell is
    grid        a labelled grid image from rendered cells, saved with its parameters
    render      rendering a grid cell by cell through the host (progress, stop, kept cells)
    live        a grid whose columns are a run's epochs, rendered as the training saves them
    candidates  which epochs to look at first, from the run's loss
    notes       ratings and notes per epoch, kept with the run

No torch and no gradio at import: the host renders (Forge's own pipeline, or diffusers standalone).
"""
