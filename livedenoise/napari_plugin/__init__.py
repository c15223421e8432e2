"""livedenoise in napari: denoise a layer, fine-tune on layers, denoise a Micro-Manager MDA live.

An optional front end (``pip install "livedenoise[napari]"``), registered through the npe2 manifest
``napari.yaml`` beside this file. Like the command line it only *uses* the product: the computations are
:func:`livedenoise.arrays.denoise_array`, :func:`livedenoise.training.finetune.finetune` and
:class:`livedenoise.attach.MDADenoiser`, so napari users get exactly what ``livedenoise denoise``, ``finetune`` and
the attach API give (the noise model fitted to their data, the residual check, every frame recorded). Nothing
here is imported by the rest of livedenoise.
"""
