"""Callbacks that other modules add to every distiller's ``fit``.

The training loop knows nothing of pruning or TFMOT: a module that needs a
callback during ``fit`` (pruning needs TFMOT's ``UpdatePruningStep`` for a
pruned student) registers a *provider* here, and ``Distiller.fit`` asks
every provider for the callbacks its student needs.

Example:
>>> def provider(student, callbacks):
...     return []  # nothing needed
>>> register(provider)
>>> callbacks_for(object(), [])
[]
"""

_PROVIDERS = []


def register(provider):
    """Registers ``provider(student, user_callbacks) -> [callback, ...]``.

    Registering the same function twice has no effect.

    Example:
    >>> register(lambda student, callbacks: [])
    """
    if provider not in _PROVIDERS:
        _PROVIDERS.append(provider)


def callbacks_for(student, callbacks):
    """The extra callbacks every provider asks for, for this student.

    Args:
        student: The model being trained.
        callbacks: The callbacks the user passed to ``fit`` (providers skip
            what the user already gave).

    Returns:
        A list of callbacks.

    Example:
    >>> callbacks_for(object(), [])
    []
    """
    extra = []
    for provider in _PROVIDERS:
        extra += list(provider(student, list(callbacks)))
    return extra
