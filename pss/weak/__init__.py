"""Weak supervision from the user's image tags (issue 17): saliency -> EPS CAMs -> pseudo masks -> AffinityNet
random walk -> refined masks, and their quality against the user's labelled masks (``pipeline``, ``quality``); the
runs ``eps_seg`` / ``eps_affinity`` that chain them (``eps_run``, registered in ``runners``).

Layer: above ``engine`` (the stages train with the one loop) and beside ``metrics``/``inference``; nothing below
imports it. The building blocks live in their own layers: ``pss.data.tags``, ``pss.data.saliency``,
``pss.models.cam``, ``pss.models.affinity``, ``pss.losses`` and the methods ``pss.methods.saliency``/``eps``/
``affinity``.
"""
