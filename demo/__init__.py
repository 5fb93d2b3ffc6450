"""`make demo`: every bot replayed end to end against moto's HTTP server, one chapter per bot.

`python -m demo` fakes the AWS environment before anything imports boto3, starts moto's threaded
server on a free local port and points `AWS_ENDPOINT_URL` at it, so every call the bots make crosses
a real socket through real botocore. It then builds a small estate (a home and a member account),
replays real-shaped events through the real handlers the way Lambda invokes them (Chalice's test
client), and checks each outcome against moto's state. Exit status 0 only if every check passed.

Chapters live in `demo.chapters.CHAPTERS`; a new bot adds one function `(Stage) -> bool` there.
Nothing in this package is imported by the app or packaged into the Lambda zip.
"""
