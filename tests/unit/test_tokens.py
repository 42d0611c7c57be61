"""Unit tests for gateway.dataplane.tokens: reward tokens bind request id, experiment, variant, expiry
and the record's nonce."""
from __future__ import annotations

import base64
import json

import pytest

from gateway.errors import Forbidden, NotFound
from gateway.dataplane.tokens import RewardTokens, TokenClaims

KEY = "k" * 32
OLD_KEY = "o" * 32
NEW_KEY = "n" * 32
NOW = 1_700_000_000.0
CLAIMS = TokenClaims(experiment="churn", variant="xgb", expires_at=NOW + 3600)
HEX = "0123456789abcdef"


def _forbidden(tokens: RewardTokens, request_id: str, token: object, code: str = "token_invalid") -> Forbidden:
    with pytest.raises(Forbidden) as info:
        tokens.verify(request_id, token, NOW)
    assert info.value.code == code
    assert info.value.status == 403
    return info.value


def _encode(claims: dict) -> str:
    raw = json.dumps(claims, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# --------------------------------------------------------------------------- round trip


def test_sign_then_verify_returns_the_signed_claims():
    tokens = RewardTokens(KEY)
    token = tokens.sign("req-1", CLAIMS)
    assert tokens.verify("req-1", token, NOW) == CLAIMS


def test_the_records_nonce_is_signed_in_and_a_token_without_one_still_verifies():
    tokens = RewardTokens(KEY)
    with_nonce = TokenClaims("churn", "xgb", NOW + 3600, nonce="9f2c")
    assert tokens.verify("req-1", tokens.sign("req-1", with_nonce), NOW) == with_nonce
    # Tokens handed out before nonces were signed in name no record: any of the id's is theirs.
    assert tokens.verify("req-1", tokens.sign("req-1", CLAIMS), NOW).nonce == ""


def test_a_token_verifies_with_a_separate_instance_holding_the_same_key():
    # The router signs, another replica verifies.
    token = RewardTokens(KEY).sign("req-1", CLAIMS)
    assert RewardTokens(KEY).verify("req-1", token, NOW) == CLAIMS


def test_token_is_url_safe_text():
    token = RewardTokens(KEY).sign("req-1", TokenClaims("exp-é/?", "v+/=", NOW + 10))
    assert token.isascii()
    assert not set(token) & set("+/= \n")


def test_a_token_is_valid_up_to_its_fractional_expiry():
    # The data plane signs `now + window` with a fractional `now`; a reward sent before that
    # instant must still be accepted, and the claims must report the expiry that was signed.
    tokens = RewardTokens(KEY)
    expires = NOW + 86_400.75
    token = tokens.sign("req-1", TokenClaims("churn", "xgb", expires))
    claims = tokens.verify("req-1", token, expires - 0.5)
    assert claims.expires_at >= expires - 1e-6


def test_the_last_instant_of_the_window_is_still_valid():
    tokens = RewardTokens(KEY)
    token = tokens.sign("req-1", CLAIMS)
    assert tokens.verify("req-1", token, CLAIMS.expires_at) == CLAIMS


# --------------------------------------------------------------------------- forgeries


def test_changing_the_last_four_characters_is_refused():
    tokens = RewardTokens(KEY)
    token = tokens.sign("req-1", CLAIMS)
    tail = token[-4:]
    forged_tail = "".join(HEX[(HEX.index(c) + 1) % 16] for c in tail)
    assert forged_tail != tail
    _forbidden(tokens, "req-1", token[:-4] + forged_tail)


def test_changing_any_single_character_of_the_mac_is_refused():
    tokens = RewardTokens(KEY)
    token = tokens.sign("req-1", CLAIMS)
    payload, mac = token.split(".")
    assert len(mac) == 64
    for i, c in enumerate(mac):
        for repl in (HEX[(HEX.index(c) + 1) % 16], c.upper() if c.isalpha() else "g"):
            if repl == c:
                continue
            forged = f"{payload}.{mac[:i]}{repl}{mac[i + 1:]}"
            with pytest.raises(Forbidden) as info:
                tokens.verify("req-1", forged, NOW)
            assert info.value.code == "token_invalid", (i, repl)


@pytest.mark.parametrize("repl", ["é", "\u00a0", "\U0001f600"])
def test_a_non_ascii_character_in_the_mac_is_refused_not_a_crash(repl):
    # Feedback bodies are client JSON: any Unicode can arrive in 'token'. It must be a 403,
    # not an exception the gateway does not map to a client error.
    tokens = RewardTokens(KEY)
    token = tokens.sign("req-1", CLAIMS)
    _forbidden(tokens, "req-1", token[:-1] + repl)


def test_a_non_ascii_payload_is_refused():
    tokens = RewardTokens(KEY)
    token = tokens.sign("req-1", CLAIMS)
    _forbidden(tokens, "req-1", "é" + token)


def test_payload_swapped_from_another_token_is_refused():
    tokens = RewardTokens(KEY)
    mine = tokens.sign("req-1", TokenClaims("churn", "logreg", NOW + 3600))
    other = tokens.sign("req-1", TokenClaims("churn", "xgb", NOW + 3600))
    my_payload, my_mac = mine.split(".")
    other_payload, other_mac = other.split(".")
    assert my_payload != other_payload
    _forbidden(tokens, "req-1", f"{other_payload}.{my_mac}")
    _forbidden(tokens, "req-1", f"{my_payload}.{other_mac}")


def test_tampered_claims_keeping_the_mac_are_refused():
    tokens = RewardTokens(KEY)
    token = tokens.sign("req-1", CLAIMS)
    _, mac = token.split(".")
    for changed in (
        {"e": "churn", "v": "logreg", "x": int(CLAIMS.expires_at)},  # another variant
        {"e": "other", "v": "xgb", "x": int(CLAIMS.expires_at)},  # another experiment
        {"e": "churn", "v": "xgb", "x": int(CLAIMS.expires_at) + 10**6},  # later expiry
    ):
        _forbidden(tokens, "req-1", f"{_encode(changed)}.{mac}")


def test_a_token_for_another_request_id_is_refused():
    tokens = RewardTokens(KEY)
    token = tokens.sign("req-1", CLAIMS)
    _forbidden(tokens, "req-2", token)
    _forbidden(tokens, "req-1 ", token)


def test_a_token_signed_with_another_key_is_refused():
    token = RewardTokens(OLD_KEY).sign("req-1", CLAIMS)
    _forbidden(RewardTokens(KEY), "req-1", token)


@pytest.mark.parametrize("token", [None, "", 123, 1.5, b"abc.def", ["a.b"], {"t": "a.b"}, True])
def test_missing_or_non_string_token_is_token_missing(token):
    _forbidden(RewardTokens(KEY), "req-1", token, code="token_missing")


@pytest.mark.parametrize("token", ["no-dot-at-all", ".", "abc.", ".abc", "a.b.c"])
def test_malformed_token_is_token_invalid(token):
    _forbidden(RewardTokens(KEY), "req-1", token)


def test_overly_long_token_is_refused():
    tokens = RewardTokens(KEY)
    _forbidden(tokens, "req-1", "a" * 5000 + "." + "b" * 64)
    # Even one genuinely signed: the limit is checked before any claim is trusted.
    long_claims = TokenClaims("e" * 3000, "xgb", NOW + 3600)
    _forbidden(tokens, "req-1", tokens.sign("req-1", long_claims))


def test_error_messages_do_not_echo_the_token():
    tokens = RewardTokens(KEY)
    token = tokens.sign("req-1", CLAIMS)
    err = _forbidden(tokens, "req-2", token)
    assert token not in err.message
    assert err.to_body()["error"]["code"] == "token_invalid"


# --------------------------------------------------------------------------- expiry


def test_expired_token_is_not_found_request_expired():
    tokens = RewardTokens(KEY)
    token = tokens.sign("req-1", CLAIMS)
    with pytest.raises(NotFound) as info:
        tokens.verify("req-1", token, CLAIMS.expires_at + 1)
    assert info.value.code == "request_expired"
    assert info.value.status == 404
    assert "req-1" in info.value.message


def test_a_forged_expired_token_is_forbidden_not_expired():
    # Forgery is checked before expiry: an attacker learns nothing from the expiry path.
    tokens = RewardTokens(KEY)
    token = tokens.sign("req-1", CLAIMS)
    with pytest.raises(Forbidden):
        tokens.verify("req-2", token, CLAIMS.expires_at + 1)


# --------------------------------------------------------------------------- key rotation


def test_token_signed_by_previous_key_verifies_after_rotation():
    token = RewardTokens(OLD_KEY).sign("req-1", CLAIMS)
    assert RewardTokens(NEW_KEY, OLD_KEY).verify("req-1", token, NOW) == CLAIMS


def test_token_signed_by_previous_key_fails_once_the_old_key_is_dropped():
    token = RewardTokens(OLD_KEY).sign("req-1", CLAIMS)
    _forbidden(RewardTokens(NEW_KEY), "req-1", token)


def test_after_rotation_new_tokens_are_signed_with_the_new_key():
    rotated = RewardTokens(NEW_KEY, OLD_KEY)
    token = rotated.sign("req-1", CLAIMS)
    assert RewardTokens(NEW_KEY).verify("req-1", token, NOW) == CLAIMS
    _forbidden(RewardTokens(OLD_KEY), "req-1", token)


def test_empty_previous_key_is_ignored():
    token = RewardTokens(KEY).sign("req-1", CLAIMS)
    assert RewardTokens(KEY, "").verify("req-1", token, NOW) == CLAIMS


def test_no_usable_key_is_refused():
    with pytest.raises(ValueError):
        RewardTokens()
    with pytest.raises(ValueError):
        RewardTokens("", "")
