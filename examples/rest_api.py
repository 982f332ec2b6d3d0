"""List backends through the raw REST API, as IBM documents it.

Reads the API key from the file named by QISKIT_IBM_TOKEN_FILE and the instance CRN from
QISKIT_IBM_INSTANCE.
"""

import os

import requests

with open(os.environ["QISKIT_IBM_TOKEN_FILE"], encoding="utf-8") as fh:
    api_key = fh.read().strip()
crn = os.environ["QISKIT_IBM_INSTANCE"]

token_response = requests.post(
    "https://iam.cloud.ibm.com/identity/token",
    headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
    data={"grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": api_key},
    timeout=30,
)
token_response.raise_for_status()
access_token = token_response.json()["access_token"]

response = requests.get(
    "https://quantum.cloud.ibm.com/api/v1/backends",
    headers={
        "Authorization": f"Bearer {access_token}",
        "Service-CRN": crn,
        "Accept": "application/json",
    },
    timeout=30,
)
response.raise_for_status()
names = [device["name"] for device in response.json()["devices"]]
print("backends:", ", ".join(names))
