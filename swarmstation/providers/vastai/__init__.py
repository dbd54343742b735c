"""The `vastai` provider: rented GPU machines through Vast.ai's REST API (protocol reference §2).

- `client.py`: `VastAIClient`, a thin synchronous client of the REST endpoints, with retries and
  the API key kept out of every message;
- `instances.py`: what Vast's instance objects mean to us (`instance_from_json`,
  `comfyui_url_of`); offers are read and ranked in `swarmstation.domain.offers`;
- `provider.py`: `VastAIProvider`, the `ComputeProvider` on top of the two.
"""
