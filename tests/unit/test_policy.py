"""Unit tests for gateway.policy: policy files load, and bad ones fail naming file and field."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from gateway.policy import PolicyError, load_policies, load_policy_file, parse_policy, policy_files

REPO = Path(__file__).resolve().parents[2]
DEFAULT_POLICY = REPO / "policies" / "default.yaml"

MINIMAL = {
    "experiment": "exp",
    "features": [{"name": "x"}],
    "variants": [{"name": "a", "model": "a.skops"}, {"name": "b", "model": "b.skops"}],
}


def _policy(**changes) -> dict:
    data = copy.deepcopy(MINIMAL)
    data.update(copy.deepcopy(changes))
    return data


def _error(data: object) -> str:
    with pytest.raises(PolicyError) as info:
        parse_policy(data, "where.yaml")
    msg = str(info.value)
    assert msg.startswith("where.yaml"), msg
    return msg


def _write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


# --------------------------------------------------------------------------- the shipped policy


def test_the_repository_default_policy_loads():
    policy = load_policy_file(DEFAULT_POLICY)
    assert policy.experiment == "churn"
    assert policy.variant_names == ["logreg", "xgb"]
    assert [f.name for f in policy.features] == ["tenure", "monthly_charges", "support_calls", "plan"]
    assert policy.features[3].values == ("basic", "pro", "enterprise")
    assert policy.promotion.min_samples == 200
    assert policy.reward.type == "bernoulli"


def test_the_policies_folder_loads_keyed_by_experiment():
    loaded = load_policies(REPO / "policies")
    assert set(loaded) == {"churn"}
    policy, path = loaded["churn"]
    assert path == DEFAULT_POLICY.resolve()
    assert policy.variant_names == ["logreg", "xgb"]


def test_minimal_policy_gets_documented_defaults():
    policy = parse_policy(MINIMAL)
    assert policy.features[0].type == "numeric"
    assert policy.reward.bounds == (0.0, 1.0)
    assert policy.prior.alpha == 1.0 and policy.prior.beta == 1.0
    assert policy.promotion.prob_best == 0.95
    assert policy.holdout is None


# --------------------------------------------------------------------------- derived values


def test_burn_in_rewards_defaults_to_promotion_min_samples():
    assert parse_policy(_policy(promotion={"min_samples": 37})).burn_in_rewards == 37
    assert parse_policy(MINIMAL).burn_in_rewards == 500


def test_explicit_burn_in_wins_even_when_zero():
    assert parse_policy(_policy(burn_in=12, promotion={"min_samples": 37})).burn_in_rewards == 12
    assert parse_policy(_policy(burn_in=0, promotion={"min_samples": 37})).burn_in_rewards == 0


def test_bandit_arms_exclude_the_holdout_and_keep_policy_order():
    data = _policy(
        variants=[{"name": n, "model": f"{n}.m"} for n in ("c", "a", "h", "b")],
        holdout={"variant": "h", "fraction": 0.1},
    )
    policy = parse_policy(data)
    assert policy.bandit_arms == ["c", "a", "b"]
    assert policy.variant_names == ["c", "a", "h", "b"]


def test_bandit_arms_are_all_variants_without_holdout():
    assert parse_policy(MINIMAL).bandit_arms == ["a", "b"]


# --------------------------------------------------------------------------- errors name the field


def test_categorical_feature_without_values_names_the_feature_and_values():
    msg = _error(_policy(features=[{"name": "x"}, {"name": "plan", "type": "categorical"}]))
    assert "features.1" in msg
    assert "values" in msg


def test_categorical_feature_with_empty_values_is_refused():
    msg = _error(_policy(features=[{"name": "plan", "type": "categorical", "values": []}]))
    assert "features.0" in msg and "values" in msg


def test_numeric_feature_with_values_is_refused():
    msg = _error(_policy(features=[{"name": "x", "type": "numeric", "values": ["a"]}]))
    assert "features.0" in msg and "values" in msg


def test_duplicate_feature_names_are_refused():
    msg = _error(_policy(features=[{"name": "x"}, {"name": "x"}]))
    assert "features" in msg and "unique" in msg


def test_unknown_top_level_key_is_named():
    msg = _error(_policy(colour="red"))
    assert "colour" in msg


def test_unknown_nested_key_is_named_with_its_path():
    msg = _error(_policy(promotion={"prob_bets": 0.9}))
    assert "promotion.prob_bets" in msg


@pytest.mark.parametrize("value", [1.5, 0.5, 0.2, -1])
def test_prob_best_out_of_range_is_named(value):
    msg = _error(_policy(promotion={"prob_best": value}))
    assert "promotion.prob_best" in msg


def test_prob_best_at_one_is_allowed():
    assert parse_policy(_policy(promotion={"prob_best": 1})).promotion.prob_best == 1.0


def test_duplicate_variant_names_are_refused():
    msg = _error(_policy(variants=[{"name": "a", "model": "1"}, {"name": "a", "model": "2"}]))
    assert "variants" in msg and "unique" in msg and "'a'" in msg


def test_holdout_naming_a_missing_variant_is_refused():
    msg = _error(_policy(holdout={"variant": "ghost", "fraction": 0.1}))
    assert "holdout.variant" in msg and "ghost" in msg


def test_holdout_that_is_the_only_variant_is_refused():
    msg = _error(_policy(variants=[{"name": "a", "model": "1"}], holdout={"variant": "a", "fraction": 0.1}))
    assert "holdout" in msg


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1])
def test_holdout_fraction_must_be_strictly_between_zero_and_one(fraction):
    msg = _error(_policy(holdout={"variant": "a", "fraction": fraction}))
    assert "holdout.fraction" in msg


def test_min_weight_times_arms_above_one_is_refused():
    variants = [{"name": n, "model": n} for n in ("a", "b", "c")]
    msg = _error(_policy(min_weight=0.4, variants=variants))
    assert "min_weight" in msg and "0.4" in msg


def test_min_weight_counts_only_bandit_arms():
    # 0.4 * 2 bandit arms = 0.8 is possible; the holdout takes no floor.
    variants = [{"name": n, "model": n} for n in ("a", "b", "h")]
    policy = parse_policy(_policy(min_weight=0.4, variants=variants, holdout={"variant": "h", "fraction": 0.1}))
    assert policy.min_weight == 0.4


def test_min_weight_of_one_half_or_more_is_refused():
    msg = _error(_policy(min_weight=0.5))
    assert "min_weight" in msg


def test_gaussian_reward_loads_with_the_default_normal_inverse_gamma_prior():
    policy = parse_policy(_policy(reward={"type": "gaussian"}))
    assert policy.reward.type == "gaussian"
    assert policy.reward.prior is None
    p = policy.reward.gaussian_prior
    assert (p.mu, p.kappa, p.alpha, p.beta) == (0.0, 0.01, 1.0, 1.0)
    # Finite by default: the posterior keeps sums of rewards and of their squares.
    assert policy.reward.bounds == (-1e12, 1e12)
    # The Beta prior keeps its defaults and meaning for bernoulli rewards.
    assert (policy.prior.alpha, policy.prior.beta) == (1.0, 1.0)


@pytest.mark.parametrize("bounds", [[float("-inf"), 0], [0, float("inf")], [float("nan"), 1]])
def test_a_reward_range_must_be_finite(bounds):
    with pytest.raises(PolicyError, match="range must be finite"):
        parse_policy(_policy(reward={"type": "gaussian", "range": bounds}))


def test_gaussian_reward_takes_its_own_prior_and_range():
    policy = parse_policy(_policy(reward={"type": "gaussian", "range": [-5, 500], "default": 0,
                                          "prior": {"mu": 20, "kappa": 2, "alpha": 3, "beta": 400}}))
    p = policy.reward.gaussian_prior
    assert (p.mu, p.kappa, p.alpha, p.beta) == (20.0, 2.0, 3.0, 400.0)
    assert policy.reward.bounds == (-5.0, 500.0)


@pytest.mark.parametrize(
    ("prior", "field"),
    [({"kappa": 0}, "kappa"), ({"alpha": 0.5}, "alpha"), ({"beta": -1}, "beta"),
     ({"mu": float("nan")}, "mu"), ({"sigma": 1}, "sigma")],
)
def test_bad_gaussian_prior_names_the_field(prior, field):
    msg = _error(_policy(reward={"type": "gaussian", "prior": prior}))
    assert f"reward.prior.{field}" in msg


def test_reward_prior_on_a_bernoulli_reward_is_refused_not_ignored():
    msg = _error(_policy(reward={"prior": {"mu": 1}}))
    assert "reward" in msg and "only for gaussian" in msg


def test_algorithms_and_discount():
    assert parse_policy(_policy()).algorithm == "thompson"
    policy = parse_policy(_policy(algorithm="discounted_thompson", discount=0.99))
    assert (policy.algorithm, policy.discount) == ("discounted_thompson", 0.99)
    assert parse_policy(_policy(algorithm="discounted_thompson")).discount == 0.9999
    assert parse_policy(_policy(discount=1)).discount == 1.0
    assert "algorithm" in _error(_policy(algorithm="epsilon_greedy"))


@pytest.mark.parametrize("discount", [0, -0.5, 1.01])
def test_discount_outside_zero_one_is_refused(discount):
    assert "discount" in _error(_policy(algorithm="discounted_thompson", discount=discount))


def test_bernoulli_range_outside_unit_interval_is_refused():
    msg = _error(_policy(reward={"type": "bernoulli", "range": [0, 2]}))
    assert "reward" in msg and "range" in msg


def test_reversed_reward_range_is_refused():
    msg = _error(_policy(reward={"range": [1, 0]}))
    assert "reward" in msg and "range" in msg


@pytest.mark.parametrize("name", ["a:b", "has space", "-lead", "", "x" * 64, "tail\n", "é"])
def test_unsafe_experiment_names_are_refused(name):
    # Names end up in Redis keys and URLs.
    msg = _error(_policy(experiment=name))
    assert "experiment" in msg


def test_variant_name_errors_name_the_variant_index():
    msg = _error(_policy(variants=[{"name": "ok", "model": "1"}, {"name": "bad name", "model": "2"}]))
    assert "variants.1.name" in msg


def test_missing_required_fields_are_named():
    msg = _error({"experiment": "exp"})
    assert "features" in msg and "variants" in msg


def test_every_problem_is_reported_at_once():
    msg = _error(_policy(colour="red", promotion={"prob_best": 2}))
    assert "colour" in msg and "promotion.prob_best" in msg


@pytest.mark.parametrize("data", [None, [], ["a"], "text", 3])
def test_non_mapping_policy_is_refused(data):
    msg = _error(data)
    assert "mapping" in msg


# --------------------------------------------------------------------------- files and folders


def test_invalid_yaml_names_the_file(tmp_path):
    path = _write(tmp_path / "broken.yaml", "experiment: [unclosed\nfeatures: {\n")
    with pytest.raises(PolicyError) as info:
        load_policy_file(path)
    assert str(path) in str(info.value)
    assert "YAML" in str(info.value)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n", ""])
def test_non_mapping_yaml_file_is_refused(tmp_path, text):
    path = _write(tmp_path / "list.yaml", text)
    with pytest.raises(PolicyError) as info:
        load_policy_file(path)
    assert str(path) in str(info.value)
    assert "mapping" in str(info.value)


def test_non_utf8_file_is_a_policy_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("experiment: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(PolicyError) as info:
        load_policy_file(path)
    assert str(path) in str(info.value)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError) as info:
        load_policy_file(path)
    assert str(path) in str(info.value)
    with pytest.raises(PolicyError) as info:
        load_policies(path)
    assert str(path) in str(info.value)


def test_field_error_in_a_file_names_file_and_field(tmp_path):
    path = _write(tmp_path / "exp.yaml", _policy(promotion={"prob_best": 7}))
    with pytest.raises(PolicyError) as info:
        load_policy_file(path)
    assert str(path) in str(info.value)
    assert "promotion.prob_best" in str(info.value)


def test_folder_with_two_files_for_the_same_experiment_is_refused(tmp_path):
    first = _write(tmp_path / "a.yaml", _policy(experiment="same"))
    second = _write(tmp_path / "b.yml", _policy(experiment="same"))
    with pytest.raises(PolicyError) as info:
        load_policies(tmp_path)
    msg = str(info.value)
    assert "same" in msg
    assert first.name in msg and second.name in msg


def test_folder_loads_every_yaml_and_yml_file(tmp_path):
    _write(tmp_path / "one.yaml", _policy(experiment="one"))
    _write(tmp_path / "two.yml", _policy(experiment="two"))
    _write(tmp_path / "notes.txt", "not a policy")
    loaded = load_policies(tmp_path)
    assert set(loaded) == {"one", "two"}
    assert loaded["two"][1] == (tmp_path / "two.yml").resolve()


def test_one_bad_file_in_a_folder_fails_the_load_naming_it(tmp_path):
    _write(tmp_path / "good.yaml", _policy(experiment="good"))
    bad = _write(tmp_path / "bad.yaml", _policy(experiment="bad", colour="red"))
    with pytest.raises(PolicyError) as info:
        load_policies(tmp_path)
    assert str(bad) in str(info.value) and "colour" in str(info.value)


def test_empty_folder_is_refused(tmp_path):
    with pytest.raises(PolicyError) as info:
        policy_files(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_policy_file_path_is_used_as_is(tmp_path):
    path = _write(tmp_path / "custom.policy", MINIMAL)
    assert policy_files(path) == [path]
    assert load_policies(path)["exp"][0].variant_names == ["a", "b"]


def test_parsed_policy_is_immutable():
    policy = parse_policy(MINIMAL)
    with pytest.raises(ValidationError):
        policy.min_weight = 0.3  # type: ignore[misc]


CONTEXT_FEATURES = [{"name": "x"}, {"name": "plan", "type": "categorical", "values": ["basic", "pro"]}]


@pytest.mark.parametrize("changes,message", [
    ({"context": ["plan"]}, "only for algorithm contextual_thompson"),
    ({"algorithm": "contextual_thompson"}, "needs the categorical features"),
    ({"algorithm": "contextual_thompson", "context": ["x"]}, "'x' is not a categorical feature"),
    # An imputed context value would make segments of values nobody declared.
    ({"algorithm": "contextual_thompson", "context": ["plan"],
      "features": [{"name": "plan", "type": "categorical", "values": ["basic"], "missing": "impute"}]},
     "with missing: error"),
    ({"variance_reduction": {"covariate": "plan"}}, "variance_reduction.covariate"),
    ({"variance_reduction": {"covariate": "x"}, "algorithm": "contextual_thompson", "context": ["plan"]},
     "non-contextual"),
])
def test_contextual_and_variance_reduction_fields_are_checked(changes, message):
    data = {"features": CONTEXT_FEATURES, **changes}
    with pytest.raises(PolicyError, match=message):
        parse_policy(_policy(**data))


POLICY_FILES = sorted([*(REPO / "policies").glob("*.yaml"), *(REPO / "tests" / "policies").glob("*.yaml")])
LINEAR = _policy(features=[{"name": "x"}, {"name": "y"}], algorithm="linear_thompson", context=["x"],
                 linear_prior={"ridge": 2.0, "a0": 1.0, "b0": 0.25})


@pytest.mark.parametrize("source", [*POLICY_FILES, "linear"], ids=lambda p: getattr(p, "name", p))
def test_a_policy_survives_the_trip_to_the_deployments(source):
    """The router and retrainer receive each policy as model_dump(mode='json') and validate it
    again: every field the dump writes must be accepted back, and mean the same."""
    from gateway.policy import Policy

    policy = parse_policy(LINEAR, "linear") if source == "linear" else load_policy_file(source)
    again = Policy.model_validate(policy.model_dump(mode="json"))
    assert again == policy
