"""Make a new API key for the key's own identity through IAM Identity, as IBM's API allows.

With the key (or, in short-lived mode, the token the sandbox's own IAM endpoint serves), ask IAM
for an access token, read the identity from it, POST /v1/apikeys for that identity (naming the
new key after the key it was made with), and check that the new key works. One line per step;
`--show-new-key` also prints the new key's value, so a test can try it after the run.
"""

import base64
import json
import os
import sys

import requests

IAM = "https://iam.cloud.ibm.com"
GRANT = "urn:ibm:params:oauth:grant-type:apikey"


def token(url, apikey):
    return requests.post(f"{url}/identity/token", data={"grant_type": GRANT, "apikey": apikey}, timeout=30)


with open(os.environ["QISKIT_IBM_TOKEN_FILE"]) as f:
    key = f.read().strip()
got = token(os.environ.get("IAM_URL") or IAM, key)  # short-lived: IAM_URL is the sandbox's own endpoint
print("token:", got.status_code, flush=True)
access = got.json()["access_token"]
claims = json.loads(base64.urlsafe_b64decode(access.split(".")[1] + "=="))
made = requests.post(
    f"{IAM}/v1/apikeys",
    headers={"Authorization": f"Bearer {access}"},
    json={"name": key, "iam_id": claims["iam_id"], "account_id": claims["account"]["bss"], "description": key},
    timeout=30,
)
print("create:", made.status_code, made.json().get("id"), flush=True)
new = made.json()["apikey"]
print("new key works:", token(IAM, new).status_code == 200, flush=True)
if "--show-new-key" in sys.argv:
    print("new key:", new, flush=True)
