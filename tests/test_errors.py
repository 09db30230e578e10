import inspect

import bastion.errors as errors


def test_every_error_descends_from_the_root_and_has_a_user_message():
    classes = [
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, Exception) and obj.__module__ == errors.__name__
    ]
    assert len(classes) > 15
    for cls in classes:
        assert issubclass(cls, errors.BastionError)
        assert cls.user_message
        assert "Traceback" not in cls.user_message


def test_tree_in_docstring_names_every_class():
    doc = errors.__doc__ or ""
    for name, obj in inspect.getmembers(errors, inspect.isclass):
        if issubclass(obj, errors.BastionError) and obj.__module__ == errors.__name__:
            assert name in doc, f"{name} missing from the tree in the module docstring"


def test_transient_flags():
    assert errors.ModelRateLimited("x").transient
    assert errors.ModelUnavailable("x").transient
    assert errors.ModelTimeout("x").transient
    assert not errors.ModelBadRequest("x").transient
    assert not errors.ModelRefused("x").transient


def test_circuit_open_carries_its_data():
    exc = errors.CircuitOpen("tool:x", 12.5)
    assert exc.name == "tool:x"
    assert exc.retry_at == 12.5
