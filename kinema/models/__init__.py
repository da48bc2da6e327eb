"""Video generative models: one folder per family behind the :class:`~kinema.models.base.VideoModel`
contract. The registry that names them is :mod:`kinema.registry` (above every family)."""
