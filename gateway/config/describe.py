"""What ``check-config`` prints: the effective settings, secrets masked, and what they mean."""

from __future__ import annotations

import json

from gateway.config.settings import Settings


def describe(settings: Settings) -> str:
    lines = ["configuration is valid.", ""]
    server = settings.server
    lines.append(f"listen on      http://{server.host}:{server.port} (env: {settings.env})")
    lines.append(f"store          {settings.store.url}")
    keys = ", ".join(k.id for k in settings.security.token_keys) or "none (dev: generated)"
    lines.append(f"token keys     {keys} (first one encrypts)")
    for t in settings.tenants:
        auth = "api token" if t.api_token else f"legacy email {t.email}"
        lines.append(
            f"tenant {t.name:<8} POST {t.resolved_base_url}/api/job/resume with {auth}, "
            f"<= {t.rate_limit_per_minute}/min, {len(t.api_keys)} API key(s)"
            + (", raw mode" if t.raw_mode else "")
        )
    lines += ["", "effective settings (secrets masked):"]
    lines.append(json.dumps(settings.model_dump(mode="json"), indent=2))
    return "\n".join(lines)
