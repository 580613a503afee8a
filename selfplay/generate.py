"""Steerable generation: ``python -m selfplay.generate --model RUN/iter_N --direction 0.8,-0.6 "prompt"``.

The direction goes into the system prompt through the one template
(``selfplay.steering.directions.render``) that training and evaluation used.  The checkpoint's
``directions.json`` (written by the run) says which attributes the direction ranges
over; ``--attributes`` names them for a checkpoint without it.  Prompts come from the
command line, from ``--prompts-file`` (one per line, or a .jsonl/.json/.parquet with a
``prompt`` column), or, with ``--interactive``, from stdin, where ``:direction 0.6,0.8``
changes the direction.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from selfplay.core.lm import Messages, ModelLoadError
from selfplay.steering.directions import DirectionError, condition, parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m selfplay.generate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("prompts", nargs="*", help="prompts to answer")
    p.add_argument("--model", required=True, help="policy checkpoint: RUN/iter_N, a directory or a hub name")
    p.add_argument("--direction", help="comma-separated weights, one per attribute, e.g. 0.8,-0.6 "
                                       "(normalised to unit length with a warning if needed)")
    p.add_argument("--attributes", help="comma-separated attribute names, for a checkpoint without directions.json")
    p.add_argument("--prompts-file", help="one prompt per line, or a .jsonl/.json/.parquet file with a prompt column")
    p.add_argument("--interactive", action="store_true", help="read prompts from stdin; ':direction W1,W2' changes it")
    p.add_argument("--system", help="a system prompt when no --direction is given")
    p.add_argument("--backend", choices=("hf", "vllm"), default="hf")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("-n", type=int, default=1, help="responses per prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--lpc-inference", choices=("mean", "sample"), default="mean",
                   help="a checkpoint with LPC heads: z from the prior's expected code, or a code drawn from it")
    return p


def model_attributes(model: str, given: str | None) -> list[str] | None:
    from selfplay.steering.directional import load_attributes

    if given:
        return [a.strip() for a in given.split(",")]
    return load_attributes(model) if Path(model).is_dir() else None


def direction_of(text: str | None, names: list[str] | None, model: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    if names is None:
        raise DirectionError(f"{model} has no directions.json (it was not trained with directions): "
                             "name its attributes with --attributes, e.g. --attributes helpfulness,verbosity")
    return parse(text, names)


def read_prompts(args: argparse.Namespace) -> list[str | Messages]:
    prompts: list[str | Messages] = list(args.prompts)
    if args.prompts_file:
        path = Path(args.prompts_file)
        if path.suffix in (".jsonl", ".json", ".parquet"):
            from selfplay.data.prompts import load_prompts

            prompts += load_prompts(str(path))
        else:
            prompts += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return prompts


class Session:
    """A loaded policy and its tokenizer, answering prompts along a direction."""

    def __init__(self, args: argparse.Namespace, names: list[str] | None):
        from omegaconf import OmegaConf

        from selfplay.config.schema import Config
        from selfplay.core.lm import load_tokenizer
        from selfplay.policy import lpc
        from selfplay.policy.engines import make_generator
        from selfplay.policy.specs import GeneratorSpec

        self.args, self.names = args, names
        self.tokenizer = load_tokenizer(args.model)
        # a checkpoint of an LPC run: its heads give each prompt's z (served as the logit bias W z)
        self.codes = lpc.load(args.model) if lpc.has_heads(args.model) else None
        if self.codes is not None and args.backend != "hf":
            raise ValueError(f"{args.model} has LPC heads, whose z is served by --backend hf so far")
        spec = GeneratorSpec.of(OmegaConf.structured(Config), args.model, args.model)  # generator.* defaults
        self.engine = make_generator(replace(spec, backend=args.backend, dtype=args.dtype, seed=args.seed))

    def messages(self, prompt: str | Messages, direction: tuple[float, ...] | None) -> Messages:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        if direction is not None:
            return condition(messages, direction, self.names)
        if self.args.system and messages[0]["role"] != "system":
            return [{"role": "system", "content": self.args.system}, *messages]
        return messages

    def answer(self, prompts: list[str | Messages], direction: tuple[float, ...] | None) -> list[list[str]]:
        from selfplay.core.lm import encode_prompt

        a = self.args
        ids = [encode_prompt(self.tokenizer, self.messages(p, direction)) for p in prompts]
        extra = {}
        if self.codes is not None:
            import torch

            from selfplay.policy import lpc

            with torch.no_grad():
                h_x = lpc.prompt_states(self.engine.model, ids, self.tokenizer.pad_token_id)
                draw = torch.Generator().manual_seed(a.seed)
                extra["codes"] = lpc.prompt_weights(self.codes, h_x, a.lpc_inference, draw)
                self.engine.set_code_table(lpc.code_table(self.codes, self.engine.model))
        groups = self.engine.generate(ids, a.n, a.temperature, a.top_p, a.max_new_tokens, a.seed, **extra)
        return [[s.text for s in g] for g in groups]


def interactive(session: Session, direction: tuple[float, ...] | None) -> None:
    print("prompt (':direction W1,W2' to steer, Ctrl-D to quit)", file=sys.stderr)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        if line.startswith(":direction"):
            try:
                direction = direction_of(line.split(None, 1)[1] if " " in line else "", session.names, session.args.model)
                print(f"direction {direction}", file=sys.stderr)
            except DirectionError as e:
                print(f"error: {e}", file=sys.stderr)
            continue
        for response in session.answer([line], direction)[0]:
            print(response, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (args.prompts or args.prompts_file or args.interactive):
        parser.error("give a prompt, --prompts-file or --interactive")
    try:
        names = model_attributes(args.model, args.attributes)
        direction = direction_of(args.direction, names, args.model)
        prompts = read_prompts(args)
        session = Session(args, names)
    except (DirectionError, ModelLoadError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if prompts:
        answers = session.answer(prompts, direction)
        for prompt, responses in zip(prompts, answers):
            if len(prompts) == 1 and not args.prompts_file:
                print("\n".join(responses))
            else:
                print(json.dumps({"prompt": prompt, "direction": direction, "responses": responses}))
    if args.interactive:
        interactive(session, direction)
    return 0


if __name__ == "__main__":
    sys.exit(main())
