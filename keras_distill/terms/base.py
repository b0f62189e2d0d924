"""The term base class, the registry, and serialisation of callables.

Example:
>>> from keras_distill.terms import get
>>> type(get("kd")).__name__
'KD'
"""

import difflib
import inspect
import re
import sys

import keras

_REGISTRY = {}
_CLASSES = {}  # every Term subclass by class name, for from_config

# Every way Keras lets a user name the KL divergence: all mean exact `KD`.
_KL_NAMES = {"kldivergence", "kld", "kl", "kullbackleiblerdivergence"}


def _normalise_name(name):
    return name.lower().replace("_", "").replace("-", "").replace(" ", "")


def register(name):
    """Class decorator: makes a term available as ``get(name)``.

    Args:
        name: The registry name (lower case).

    Returns:
        The decorator.

    Example:
    >>> from keras_distill.terms import L2
    >>> @register("my_l2")
    ... class MyL2(L2):
    ...     pass
    >>> type(get("my_l2")).__name__
    'MyL2'
    >>> _ = _REGISTRY.pop("my_l2")
    """
    def decorate(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(
                f"A term named {name!r} is already registered "
                f"({_REGISTRY[name].__name__}); choose another name."
            )
        _REGISTRY[name] = cls
        cls.registry_name = name
        return cls

    return decorate


def names():
    """The names `get` knows.

    Example:
    >>> "kd" in names()
    True
    """
    return tuple(_REGISTRY)


def get(identifier, **options):
    """Looks a term up by name, or passes a term through.

    Args:
        identifier: A registered name (``"kd"``, ``"dkd"``, ...; Keras's
            names of the KL divergence such as ``"kl_divergence"`` mean
            ``"kd"``), a ``{"class_name": ..., "config": ...}`` dict from
            `Term.get_config`, or a `Term` (returned as is; ``options``
            must then be empty).
        **options: The term's constructor arguments.

    Returns:
        A `Term`.

    Example:
    >>> get("kl_divergence")
    KD(temperature=None, standardise=False)
    >>> get("l3")
    Traceback (most recent call last):
    ...
    ValueError: Unknown distillation term 'l3'. Known: ...
    """
    if isinstance(identifier, Term):
        if options:
            raise ValueError(
                f"Options {sorted(options)} were given with a term object "
                f"{identifier!r}: set them when building the term."
            )
        return identifier
    if isinstance(identifier, dict) and "class_name" in identifier:
        return Term.from_config(identifier)
    if not isinstance(identifier, str):
        raise TypeError(
            "A distillation term must be a name such as 'kd', a "
            "keras_distill.terms.Term or a term config dict, got "
            f"{type(identifier).__name__}."
        )
    key = identifier.lower()
    if _normalise_name(key) in _KL_NAMES:
        key = "kd"
    cls = _REGISTRY.get(key)
    if cls is None:
        raise ValueError(
            f"Unknown distillation term {identifier!r}. Known: "
            f"{sorted(_REGISTRY)}."
        )
    check_options(cls, options, f"Term {identifier!r}")
    return cls(**options)


def check_options(cls, options, where):
    """Refuses options a term class does not take, naming the ones it does
    (and the closest to a misspelt one).

    Example:
    >>> from keras_distill.terms import KD
    >>> check_options(KD, {"temprature": 4}, "Term 'kd'")
    Traceback (most recent call last):
    ...
    TypeError: Term 'kd' takes no option 'temprature' (did you mean 'temperature'?); its options are ['temperature', 'standardise'].
    """
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return
    allowed = [p.name for p in parameters
               if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for name in options:
        if name not in allowed:
            close = difflib.get_close_matches(name, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(
                f"{where} takes no option {name!r}{hint}; its options are "
                f"{allowed}."
            )


def _fmt(value):
    return repr(value)


class Term:
    """Base class of every distillation term.

    Subclasses set the class attribute ``kind`` (``"logits"`` or
    ``"features"``), implement ``per_sample`` and list their options in
    ``_options`` (constructor argument names, used by `get_config` and
    ``repr``).

    Example:
    >>> isinstance(get("l2"), Term)
    True
    """

    kind = None
    registry_name = None
    _options = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _CLASSES[cls.__name__] = cls

    def get_config(self):
        """``{"class_name": ..., "config": {option: value}}``.

        Example:
        >>> from keras_distill.terms import KD
    >>> KD(temperature=2).get_config()
        {'class_name': 'KD', 'config': {'temperature': 2.0, 'standardise': False}}
        """
        return {
            "class_name": type(self).__name__,
            "config": {name: getattr(self, name) for name in self._options},
        }

    @classmethod
    def from_config(cls, config):
        """Rebuilds a term from `get_config`'s dict.

        Example:
        >>> from keras_distill.terms import KD
        >>> Term.from_config(KD(temperature=2).get_config())
        KD(temperature=2.0, standardise=False)
        """
        name = config.get("class_name")
        options = dict(config.get("config", {}))
        term_cls = _CLASSES.get(name)
        if term_cls is None:
            raise ValueError(
                f"Unknown term class {name!r} in config {config!r}.")
        from_options = getattr(term_cls, "from_options", None)
        return from_options(options) if from_options else term_cls(**options)

    def __repr__(self):
        options = ", ".join(
            f"{name}={_fmt(getattr(self, name))}" for name in self._options
        )
        return f"{type(self).__name__}({options})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash(repr(self))




def _keras_module_of(obj):
    module = type(obj).__module__ or ""
    return module.split(".")[0]


def is_loss_object(fn):
    """Whether ``fn`` is a Keras 3 or tf_keras ``Loss`` instance.

    Example:
    >>> import keras
    >>> is_loss_object(keras.losses.MeanSquaredError()), is_loss_object(len)
    (True, False)
    """
    return isinstance(fn, keras.losses.Loss) or (
        _keras_module_of(fn) == "tf_keras" and hasattr(fn, "call"))


def per_sample_loss(fn, y_true, y_pred):
    """Per-sample values of a loss: a Keras ``Loss`` object is not reduced.

    A Keras 3 or tf_keras ``Loss`` instance is evaluated through its
    public ``call`` (after the dtype cast ``Loss.__call__`` would do); any
    other callable is called as ``fn(y_true, y_pred)``.

    Example:
    >>> import numpy as np, keras
    >>> values = per_sample_loss(keras.losses.MeanSquaredError(),
    ...                          np.zeros((2, 3)), np.ones((2, 3)))
    >>> tuple(values.shape)
    (2,)
    """
    if isinstance(fn, keras.losses.Loss):
        dtype = getattr(fn, "dtype", None) or "float32"
        y_true = keras.tree.map_structure(
            lambda v: keras.ops.cast(v, dtype), y_true)
        return fn.call(y_true, keras.ops.cast(y_pred, dtype))
    if _keras_module_of(fn) == "tf_keras" and hasattr(fn, "call"):
        return fn.call(y_true, y_pred)
    return fn(y_true, y_pred)




_CATEGORICAL = ("CategoricalCrossentropy", "SparseCategoricalCrossentropy",
                "CategoricalFocalCrossentropy")


def crossentropy_from_logits(fn):
    """``from_logits`` of a Keras categorical cross-entropy (object or
    function, either flavour), or ``None`` for any other loss.

    Example:
    >>> import keras
    >>> crossentropy_from_logits(keras.losses.SparseCategoricalCrossentropy())
    False
    >>> crossentropy_from_logits(keras.losses.categorical_crossentropy)
    False
    >>> crossentropy_from_logits(keras.losses.MeanSquaredError()) is None
    True
    """
    found = keras_crossentropy(fn)
    return None if found is None else found[1]


def keras_crossentropy(fn):
    """``(class name, from_logits)`` of a Keras categorical cross-entropy
    (object or function, either flavour), or ``None`` for any other loss.

    Example:
    >>> import keras
    >>> keras_crossentropy(keras.losses.SparseCategoricalCrossentropy(
    ...     from_logits=True))
    ('SparseCategoricalCrossentropy', True)
    """
    modules = [keras, sys.modules.get("tf_keras")]
    for module in filter(None, modules):
        for name in _CATEGORICAL:
            cls = getattr(module.losses, name, None)
            if cls is not None and isinstance(fn, cls):
                return name, bool(fn.get_config().get("from_logits", False))
            function = getattr(module.losses, _snake(name), None)
            if function is not None and fn is function:
                default = inspect.signature(fn).parameters["from_logits"].default
                return name, bool(default)
    return None


def _snake(name):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# -------------------------------------------------------------- serialisation
def _serialize(obj):
    """Keras-serialises a callable or layer, remembering its Keras flavour."""
    if obj is None or isinstance(obj, str):
        return obj
    flavour = _keras_module_of(obj)
    if flavour != "tf_keras":
        flavour = "keras"
    if flavour == "tf_keras":
        import tf_keras as k
    else:
        k = keras
    return {"flavour": flavour, "object": k.saving.serialize_keras_object(obj)}


def _deserialize(obj):
    """The inverse of `_serialize`."""
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, dict) and set(obj) == {"flavour", "object"}:
        if obj["flavour"] == "tf_keras":
            import tf_keras as k
        else:
            k = keras
        return k.saving.deserialize_keras_object(obj["object"])
    return keras.saving.deserialize_keras_object(obj)
