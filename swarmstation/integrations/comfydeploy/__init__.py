"""ComfyUI Deploy, the managed service, as a second executor beside our pool.

- `client.py`: its REST API (`ComfyDeployClient`);
- `dispatcher.py`: queues the jobs the traffic split sends there and applies their run updates;
- the pure reading and ordering of run updates is `swarmstation.domain.comfydeploy_webhooks`, and
  the webhook's HTTP endpoint is `swarmstation.api.comfydeploy`.
"""
