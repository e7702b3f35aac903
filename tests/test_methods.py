"""The method registry drives everything: names, message types, settings, labels."""

from __future__ import annotations

import pytest
from flwr.app.metadata import validate_message_type

from pemn_fl.config import RunSettings, SettingsError
from pemn_fl.methods import get, names, registry
from pemn_fl.report import label_of


def test_every_registered_method_is_a_complete_module() -> None:
    assert {"pemn", "fedavg", "evolve", "evolve_dither", "pemn_wide"} <= set(names())
    settings = RunSettings(dataset="synthetic", model="mlp", width=0.25, dense_width=0.25)
    for name, method in registry().items():
        assert method.name == name
        assert validate_message_type(method.message_type), method.message_type
        assert callable(method.client_step) and callable(method.server)
        assert method.num_params(settings) > 0
        assert method.label and method.label != name


def test_labels_are_the_registry_entries_and_unknown_names_stand_for_themselves() -> None:
    # Known answers: the labels the README's tables print, not the registry read back.
    assert label_of("fedavg") == "FedAvg (dense floats)"
    assert label_of("pemn") == "PEMN-FL (masks)"
    assert label_of("evolve_dither") == "Evolving prototype, dithered votes"
    # A rounds.csv from a registry that had another method still plots, under its name.
    assert label_of("retired_method") == "retired_method"
    labels = [label_of(name) for name in names()]
    assert len(set(labels)) == len(labels)  # every curve and row is told apart


def test_unknown_and_duplicate_methods_are_clear_errors() -> None:
    with pytest.raises(SettingsError, match="use 'all' or a comma list of pemn"):
        RunSettings(methods="pemn,nope")
    with pytest.raises(SettingsError, match="only once"):
        RunSettings(methods="pemn,pemn")
    with pytest.raises(KeyError, match="unknown method"):
        get("nope")


def test_all_means_every_registered_method() -> None:
    assert RunSettings(methods="all").method_list == list(names())


def test_wide_variant_is_wider_and_counts_its_own_edges() -> None:
    settings = RunSettings(dataset="synthetic", model="mlp", width=0.25)
    assert get("pemn_wide").num_params(settings) > 2 * get("pemn").num_params(settings)


def test_mask_methods_keep_their_state_apart() -> None:
    """pemn and pemn_wide in one run: a node's state for one never feeds the other."""
    from pemn_fl.methods import pemn

    keys = {name: pemn.state_keys(name) for name in ("pemn", "pemn_wide")}
    assert keys["pemn"] == ("pemn-global", "pemn-global-id", "pemn-scores")  # as before
    assert not set(keys["pemn"]) & set(keys["pemn_wide"])
