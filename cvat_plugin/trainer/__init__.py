"""The trainer service behind the Nuclio trainer function: job API, worker, progress and publishing, plus
the client and token the gateway and CLI use to reach it."""
