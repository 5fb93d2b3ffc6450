"""Benchmarks of the bots against moto's HTTP server (`make bench`); nothing here reaches AWS.

Importing the package fakes the AWS environment (the demo's: fake credentials, no profile, no
default AMIs in moto, the bots' logs from WARNING up) before any bench module imports the bots,
whose logger reads its level when it is built. Nothing in this package is packaged into the Lambda.
"""

from demo.environment import fake_aws

fake_aws()
