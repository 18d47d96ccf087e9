#!/usr/bin/env python3
"""Correct an upstream answer through `alens serve` with the official `openai` client.

    alens serve --model mini-aligner --port 8080 &
    pip install openai
    python3 examples/openai_client.py --base-url http://127.0.0.1:8080/v1 --alpha 0.5

The last assistant message is the answer to correct, the user message before it the
question; the strength goes in the extension field "steering" (extra_body). Prints one JSON
line per alpha: {"alpha", "output", "finish_reason", "streamed"}; the streamed text equals
the plain one.
"""
import argparse
import json
import sys

try:
    from openai import OpenAI
except ImportError:
    sys.exit("this example needs the openai package: pip install openai")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:8080/v1")
    parser.add_argument("--question", default="what colour is snow?")
    parser.add_argument("--answer", default="snow is green.")
    parser.add_argument("--alpha", type=float, action="append", help="repeat for several strengths (default: 0)")
    args = parser.parse_args()
    client = OpenAI(base_url=args.base_url, api_key="not-needed")
    model = client.models.list().data[0].id
    messages = [{"role": "user", "content": args.question}, {"role": "assistant", "content": args.answer}]
    for alpha in args.alpha or [0.0]:
        reply = client.chat.completions.create(model=model, messages=messages, extra_body={"steering": {"alpha": alpha}})
        stream = client.chat.completions.create(model=model, messages=messages, stream=True, extra_body={"steering": {"alpha": alpha}})
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        choice = reply.choices[0]
        print(json.dumps({"alpha": alpha, "output": choice.message.content, "finish_reason": choice.finish_reason, "streamed": streamed}))


if __name__ == "__main__":
    main()
