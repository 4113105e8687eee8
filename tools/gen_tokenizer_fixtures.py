#!/usr/bin/env python3
"""gen_tokenizer_fixtures.py — writes the tokenizer fixtures that tests/unit/test_tokenizer.c
checks frontend/text/tokenizer.c against.

The reference is Hugging Face `tokenizers` (the Rust library behind transformers' fast
tokenizers), an implementation independent of ours. Everything lands in
tests/fixtures/tokenizers/:

    corpus.jsonl          one JSON string per line: >= 2000 test strings, generated
                          deterministically (many scripts, emoji, combining marks, NFC/NFD,
                          whitespace runs, numbers, code, URLs, special-token text, long words,
                          the empty string), then NUL_STRINGS (U+0000 is a character like any
                          other: "\u0000" in the file; appended last and left out of training,
                          so the trained vocabularies are those of the strings before them)
    spm/                  tokenizer.json + tokenizer_config.json: a Llama-2-style SentencePiece
                          BPE (byte_fallback, <0xXX> byte tokens, Prepend("▁")+Replace(" ","▁")
                          normalizer, no pre-tokenizer, <s> via TemplateProcessing) trained here
    spm.gguf              the same vocabulary as a GGUF "llama" tokenizer (scores, token types, no
                          merges), as llama.cpp's converter writes SentencePiece models
    llama3/               tokenizer.json + tokenizer_config.json: a byte-level BPE trained here
                          with Llama 3's split regex, ignore_merges and <|begin_of_text|>
    llama3.gguf           the same as a GGUF "gpt2" tokenizer with pre "llama-bpe"
    qwen2/                tokenizer.json + tokenizer_config.json: the llama3 vocabulary with
                          Qwen2's split regex, the NFC normalizer, and added tokens that use every
                          flag (lstrip, rstrip, single_word, normalized, special or not)
    qwen2.gguf            the same as a GGUF "gpt2" tokenizer with pre "qwen2" (GGUF has no added-
                          token flags: its expected ids are stored where they differ)
    expected_<name>.jsonl for name in spm, llama3, qwen2, smollm2: a header line, then one line per
                          corpus string (same order)
    variants.json         pipeline variants of spm and llama3 that exercise what the four above do
                          not (Lowercase, NFKC, NFD, Strip, regex Replace; every Split behavior,
                          invert, Digits, Whitespace, WhitespaceSplit, Punctuation, ByteLevel with
                          add_prefix_space; Metaspace "first"/"always", split or not; unk with and
                          without fuse_unk, no unk; Metaspace and Strip decoders, no decoder; EOS
                          templates; lstrip/rstrip/normalized added tokens): each is the base
                          tokenizer.json with these top-level sections (and model options) replaced
    expected_v_<name>.jsonl  like expected_<name>.jsonl for every 4th corpus string, with "i" the
                          string's index

The smollm2 expectations come from the default model's GGUF (tools/fetch_model.sh): its vocabulary
and merges are loaded into a `tokenizers` BPE with SmolLM2's own pipeline (Digits with
individual_digits, then ByteLevel with the GPT-2 regex; this is what llama.cpp's pre name "smollm"
means). That tokenizer.json would be ~2 MB, so it is not stored; the C test reads the GGUF.

Header line: {"tokenizer", "n", "prefix", "suffix"}: encode(s, add_special_tokens=True) equals
prefix + encode(s, add_special_tokens=False) + suffix for every corpus string (checked here).
String lines, fields present only when they carry information:

    i          (variants only) index of the corpus string
    ids        encode(s, add_special_tokens=False).ids (special/added tokens in s are matched)
    nosp       the same with encode_special_tokens=True (special-token text is plain text), when
               different from ids
    dec        decode(ids, skip_special_tokens=False), when different from s
    dec_skip   decode(ids, skip_special_tokens=True), when different from dec (or s)
    dec_bos    decode(prefix + ids + suffix, skip_special_tokens=True), when different from
               dec_skip (or dec, or s)
    nodec      1 when HF's decode panics (its Strip decoder with stop > 0 on an empty string):
               decoding is not compared
    gguf       ids of the GGUF variant, when different from ids

Usage: .venv/bin/python tools/gen_tokenizer_fixtures.py [--model PATH] [out_dir]
Deterministic for a given `tokenizers` version (training included): rerunning rewrites identical
files.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import unicodedata

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers, processors, trainers

SEED = 20250611
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# ---- corpus ----

SENTENCES = {
    "en": [
        "The quick brown fox jumps over the lazy dog.",
        "I'm sure it's fine; we'll see what they've done, and you'd agree.",
        "DON'T SHOUT! It'S NOT what I'D call polite, WE'LL see.",
        "Hello, world! How are you doing today?",
        "In 1969, Apollo 11 landed on the Moon after a 4-day journey of 384,400 km.",
        "She sells sea-shells by the sea-shore (allegedly).",
        "Tokenizers split text into pieces; models see only the ids.",
        "What's the weather like in San Francisco? It's 18°C and foggy.",
        "E = mc^2, a^2 + b^2 = c^2, and 2 + 2 = 4.",
        "Mr. O'Neil paid $1,234.56 for 3 items on 2024-03-15 at 10:45 a.m.",
    ],
    "fr": [
        "Le cœur a ses raisons que la raison ne connaît point.",
        "Où est la bibliothèque ? À côté de l'église, près du château.",
        "L'été dernier, nous sommes allés à Besançon et à Orléans.",
        "Ça va très bien, merci ! Et vous-même ?",
    ],
    "de": [
        "Größe, Fußgänger und Straße: typisch deutsche Wörter mit ß und Umlauten.",
        "Donaudampfschifffahrtsgesellschaftskapitänsmütze ist ein langes Wort.",
        "Übermäßig höflich, äußerst gemütlich.",
    ],
    "es": [
        "¿Dónde está el baño? ¡Muchas gracias, señor!",
        "El pingüino comió jalapeños en Año Nuevo.",
    ],
    "pt": ["Não há coração que não sinta saudade.", "Ação, emoção, informação e razão."],
    "pl": ["Zażółć gęślą jaźń.", "Chrząszcz brzmi w trzcinie w Szczebrzeszynie."],
    "vi": ["Tiếng Việt có nhiều dấu thanh: à, á, ả, ã, ạ.", "Người Việt Nam yêu hòa bình."],
    "tr": ["İstanbul'da ılık bir akşam; ığdır, İzmir ve Iğdır.", "Şişli'de çay içtik."],
    "ru": [
        "Съешь же ещё этих мягких французских булок, да выпей чаю.",
        "Привет, мир! Как дела? Всё хорошо.",
        "В 2023 году было 365 дней.",
    ],
    "uk": ["Ґава, їжак і євшан-зілля.", "Слава Україні!"],
    "el": [
        "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.",
        "Καλημέρα κόσμε! Τι κάνεις;",
        "Σίσυφος, ΣΊΣΥΦΟΣ, ς και σ.",
    ],
    "ar": [
        "مرحبا بالعالم! كيف حالك اليوم؟",
        "اللغة العربية جميلة جداً، وتُكتب من اليمين إلى اليسار.",
        "الرقم ١٢٣٤٥ مكتوب بالأرقام العربية الهندية.",
    ],
    "he": ["שלום עולם! מה שלומך?", "עִבְרִית עִם נִקּוּד."],
    "hi": [
        "नमस्ते दुनिया! आप कैसे हैं?",
        "हिन्दी देवनागरी लिपि में लिखी जाती है। १२३४",
        "क्षत्रिय, ज्ञान, श्री और द्वार।",
    ],
    "th": ["สวัสดีชาวโลก คุณเป็นอย่างไรบ้าง", "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ"],
    "zh": [
        "你好，世界！今天天气怎么样？",
        "我爱自然语言处理。机器学习和深度学习都很有趣。",
        "中华人民共和国成立于1949年10月1日。",
        "繁體中文與简体中文。",
    ],
    "ja": [
        "こんにちは世界！お元気ですか？",
        "日本語はひらがな、カタカナ、漢字を使います。",
        "ｶﾀｶﾅ（半角）とカタカナ（全角）。",
    ],
    "ko": ["안녕하세요 세계! 어떻게 지내세요?", "한국어는 한글로 씁니다. 감사합니다."],
    "misc": [
        "Ἀθῆναι, ᾠδή, ὑπέρ.",
        "ᚠᛇᚻ᛫ᛒᛦᚦ᛫ᚠᚱᚩᚠᚢᚱ᛫ᚠᛁᚱᚪ",
        "ሰላም ለዓለም",
        "Բարեւ աշխարհ",
        "გამარჯობა მსოფლიო",
        "வணக்கம் உலகம்",
        "ಹಲೋ ವರ್ಲ್ಡ್",
        "ສະບາຍດີ",
        "မင်္ဂလာပါ",
        "སྐད་ཡིག",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙 𝒮𝒸𝓇𝒾𝓅𝓉",
        "𐌰𐌱𐌲 𓀀𓀁 𠀀𠀁𪜀",
    ],
}

EMOJI = [
    "👍", "👍🏽", "👍🏿", "😀", "🤖", "🙂", "❤️", "❤", "🔥", "✨", "🎉",
    "👨‍👩‍👧‍👦", "👩‍💻", "🧑🏿‍💻", "🏳️‍🌈", "🏴‍☠️", "👁️‍🗨️", "🇫🇷", "🇯🇵", "🇺🇸",
    "1️⃣", "#️⃣", "©️", "™", "🫠", "🦀", "🐍", "👋🏻", "🤝🏼", "💁‍♀️", "🏃🏽‍♂️",
]

COMBINING = [
    "e\u0301", "a\u0308\u0301", "n\u0303", "o\u0302\u0323",
    "Z\u0338\u0322\u034ea\u0335l\u0336g\u0337o",
    "\u0301", "\u0301\u0301\u0301", "ñ", "n\u0303", "Å", "\u212b", "A\u030a", "ﬁ", "①", "ｈｅｌｌｏ",
    "ｈｅｌｌｏ　ｗｏｒｌｄ", "Ⅻ", "½", "²³", "ǅ", "ﬀ", "µ", "K", "\u00b5", "\u03bc",
    "İ", "ı", "ß", "ẞ", "Σ", "ς",
]

WHITESPACE = [
    " ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", "\r\n\r\n", "\r", " \n ", "\n \n",
    "    ", " \t ", "\u00a0", "\u3000", "\u2028", "\u2029", "\u0085", "\u180e", "\u200b",
    "\ufeff", "\u2009", "\u202f", "\u205f", "\u1680", "\u000b", "\u000c", "\u2002\u2003",
]

CODE = [
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}\n",
    "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); return 0; }",
    "const x = arr.map((v, i) => v * 2).filter(Boolean);  // ES6",
    "<div class=\"container\"><p>Hello &amp; welcome</p></div>",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC;",
    "if __name__ == '__main__':\n    main()\n",
    "fn main() {\n    println!(\"{:?}\", vec![1, 2, 3]);\n}",
    "$ ls -la ~/.config && echo $HOME | tr '/' '\\n'",
    "{\"key\": [1, 2.5, true, null], \"nested\": {\"a\": \"b\"}}",
    "    \n        indented\n    \n",
    "x+=1;y-=2;z*=3;w/=4;v%=5;u**=6;t//=7",
    "a_b_c __init__ CamelCaseName snake_case_name kebab-case-name SCREAMING_CASE",
    "0x1F 0b1010 0o777 1e-10 3.14f 6.02e23 -0.0 +1",
]

URLS = [
    "https://www.example.com/path/to/page?query=value&other=123#section",
    "http://localhost:8080/v1/chat/completions",
    "mailto:someone@example.org",
    "ftp://files.example.net/pub/file-1.2.3.tar.gz",
    "https://ja.wikipedia.org/wiki/日本語",
    "user.name+tag@sub.domain.co.uk",
    "www.ünïcödé.com/ñ?q=ü",
]

SPECIAL_TEXT = [
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<s>", "</s>", "<unk>", "<|begin_of_text|>",
    "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<mask>",
    "<tool_call>", "[WORD]", "café", "cafe\u0301", "<repo_name>", "<filename>", "<0x41>",
]

SPECIAL_STRINGS = [
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
    "<|im_start|>assistant\n",
    "<s>[INST] What is 2+2? [/INST] 4</s>",
    "<s>", "</s>", "<s></s>", " <s> ", "<s><s><s>", "text</s>more", "<unk>", "a<unk>b",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>",
    "<|endoftext|>", "<|endoftext|><|endoftext|>", "<|im_start", "im_start|>", "<|im_start|",
    "<|im_start|><|im_end|>", "< s>", "<S>", "</ s>", "<<s>>", "<</s>",
    "Use <mask> here", "Use<mask>here", "Use   <mask>   here", "<mask><mask>", "   <mask>",
    "call <tool_call>   {\"a\": 1}", "<tool_call>\n\nx", "<tool_call><tool_call>",
    "a [WORD] b", "a[WORD]b", "[WORD]", "x [WORD]y", "[WORD] [WORD]", "é[WORD]", "_[WORD]",
    "un café noir", "un cafe\u0301 noir", "cafés", "CAFÉ", "le café.", "café\u0301",
    "<filename>main.c<file_sep><repo_name>x", "<jupyter_code>print(1)<jupyter_output>1",
    "<0x41><0xE4>", "▁hello▁world", "▁", "▁▁▁", " ▁ ", "Ġhello", "ĠĠ",
]

LONG = [
    "a" * 1000, "ab" * 600, "supercalifragilisticexpialidocious" * 40, "🙂" * 300,
    "1234567890" * 120, " " * 1200, "\n" * 500, "\t" * 300, "日本語" * 400,
    "Ω" * 1100, "é" * 1000, "e\u0301" * 600, "-" * 1000, "=+" * 600, "😀👍🏽" * 200,
    "abc " * 400, "xyz\n" * 300, "A" * 2048, "ก" * 1000, "한" * 1000,
]

ASCII_WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from or "
    "one had by word but not what all were we when your can said there use an each which she do "
    "how their if will up other about out many then them these so some her would make like him "
    "into time has look two more write go see number no way could people my than first water been "
    "call who oil its now find long down day did get come made may part tokenizer model server "
    "inference latency throughput request response stream batch kernel memory cache vector matrix"
).split()


def rand_from(rng, alphabet, lo, hi):
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))


def script_alphabets():
    ranges = {
        "latin": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "accents": "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿœšžßÀÉÎÕÜŸŒŠŽąęłńśźżčřůőűğşı",
        "cyrillic": "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЖЗИЙКЛМНОПРСТУФХЦЧШЩЭЮЯіїєґ",
        "greek": "αβγδεζηθικλμνξοπρστυφχψωάέήίόύώϊϋΐΰΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩς",
        "arabic": "ابتثجحخدذرزسشصضطظعغفقكلمنهويءآأؤإئىةًٌٍَُِّْ",
        "hebrew": "אבגדהוזחטיכלמנסעפצקרשתךםןףץ",
        "devanagari": "अआइईउऊएऐओऔकखगघचछजझटठडढणतथदधनपफबभमयरलवशषसहािीुूेैोौं्",
        "thai": "กขคงจฉชซญดตถทธนบปผพฟภมยรลวศษสหอฮะาิีึืุูเแโใไ่้๊๋็์",
        "cjk": "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过",
        "kana": "あいうえおかきくけこさしすせそたちつてとなにぬねのアイウエオカキクケコサシスセソー",
        "hangul": "가나다라마바사아자차카타파하한국어글세계안녕하세요감사합니다",
        "digits": "0123456789",
        "punct": "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
        "symbols": "©®°±×÷€£¥¢§¶•…—–‘’“”«»‹›€₹₽∑∏∫√∞≈≠≤≥←→↑↓★☆♠♣♥♦",
    }
    return ranges


def make_corpus():
    rng = random.Random(SEED)
    out = [""]
    all_sent = [s for lst in SENTENCES.values() for s in lst]
    out += all_sent
    nfd = [unicodedata.normalize("NFD", s) for s in all_sent]
    out += [d for s, d in zip(all_sent, nfd) if d != s]
    out += [unicodedata.normalize("NFKD", s) for s in COMBINING]
    out += EMOJI + COMBINING + WHITESPACE + CODE + URLS + SPECIAL_TEXT + SPECIAL_STRINGS + LONG
    out += [chr(c) for c in range(0x20, 0x7F)]  # every printable ASCII character alone
    out += [chr(c) for c in range(1, 0x20)]  # control characters (no NUL: JSON/C strings)
    out += ["\x7f", "\u00ad", "\u200d", "\u200c", "\u2060", "\ue000", "\U0010fffd", "\ufffd"]
    # numbers
    for _ in range(60):
        n = rng.randint(1, 40)
        out.append("".join(rng.choice("0123456789") for _ in range(n)))
    out += ["3.14159", "1,000,000", "-42", "+7", "1e9", "٣٤٥", "१२३", "๓๔๕", "½", "²", "Ⅻ",
            "10.5%", "$9.99", "€100", "1st 2nd 3rd 4th", "v1.2.3-rc.4", "192.168.0.1:8080"]
    # whitespace combinations around words
    for _ in range(150):
        parts = []
        for _ in range(rng.randint(1, 6)):
            parts.append(rng.choice(WHITESPACE) * rng.randint(1, 3))
            parts.append(rng.choice(ASCII_WORDS + all_sent[:5] + EMOJI[:5]))
        if rng.random() < 0.5:
            parts.append(rng.choice(WHITESPACE) * rng.randint(1, 4))
        out.append("".join(parts))
    # random strings per script, alone and mixed
    alph = script_alphabets()
    names = sorted(alph)
    for _ in range(700):
        k = rng.randint(1, 4)
        frags = []
        for _ in range(k):
            a = alph[rng.choice(names)]
            frags.append(rand_from(rng, a, 1, 12))
        sep = rng.choice([" ", " ", " ", "", "\n", "  ", "\t", ", ", ". "])
        out.append(sep.join(frags))
    # English-like word salad and mixes of everything
    pools = all_sent + EMOJI + COMBINING + CODE + URLS + SPECIAL_TEXT + ASCII_WORDS
    for _ in range(700):
        k = rng.randint(1, 12)
        words = [rng.choice(pools) if rng.random() < 0.3 else rng.choice(ASCII_WORDS)
                 for _ in range(k)]
        s = " ".join(words)
        r = rng.random()
        if r < 0.1:
            s = " " + s
        elif r < 0.2:
            s = s + " "
        elif r < 0.25:
            s = s.upper()
        elif r < 0.3:
            s = s.capitalize() + "."
        out.append(s)
    # NFC and NFD versions of random accented strings
    for _ in range(100):
        s = rand_from(rng, alph["accents"] + alph["latin"] + "  ", 3, 30)
        out.append(unicodedata.normalize("NFD", s))
        out.append(unicodedata.normalize("NFC", s))
    # contractions in odd cases
    for _ in range(60):
        w = rng.choice(ASCII_WORDS)
        c = rng.choice(["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve",
                        "'LL",
                        "’s", "'x", "''", "'"])
        out.append(rng.choice([w + c, w.upper() + c, c + " " + w, w + c + w]))
    assert all("\x00" not in s for s in out)
    assert len(out) >= 2000, len(out)
    return out + NUL_STRINGS


NUL_STRINGS = ["\x00", "\x00\x00", "hello\x00 world", "a\x00b", " \x00 ", "\x00hello",
               "x\x00\ny\x00", "12\x003", "\u65e5\u672c\x00\u8a9e", "tab\t\x00",
               "<s>\x00</s>", "<|im_start|>\x00<|im_end|>", "end\x00"]


def training_texts(corpus):
    rng = random.Random(SEED + 1)
    texts = list(corpus)
    all_sent = [s for lst in SENTENCES.values() for s in lst]
    for _ in range(20000):
        k = rng.randint(3, 20)
        words = " ".join(rng.choice(ASCII_WORDS) for _ in range(k))
        texts.append(words + rng.choice([".", "!", "?", ""]))
    texts += all_sent * 50 + CODE * 50
    return texts


# ---- tokenizers ----


def byte_tokens():
    return ["<0x%02X>" % b for b in range(256)]


def build_spm(texts):
    """Llama-2-style: train a BPE over ▁-prefixed words, then lay the vocabulary out like a
    SentencePiece model (specials, 256 byte tokens, pieces) and list as merges every split of
    every piece into two pieces, in piece order: exactly how SentencePiece's score order ranks
    merges, and what transformers' converter writes for Llama 2."""
    specials = ["<unk>", "<s>", "</s>"]
    t = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    t.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    tr = trainers.BpeTrainer(vocab_size=2600, special_tokens=specials, limit_alphabet=160,
                             show_progress=False)
    t.train_from_iterator(texts, tr)
    trained = sorted(t.get_vocab(with_added_tokens=False).items(), key=lambda kv: kv[1])
    vocab = {}
    for tok in specials + byte_tokens():
        vocab[tok] = len(vocab)
    for tok, _ in trained:
        if tok not in vocab:
            vocab[tok] = len(vocab)
    n_fixed = len(specials) + 256
    merges = []
    for tok, i in sorted(vocab.items(), key=lambda kv: kv[1]):
        if i < n_fixed or len(tok) < 2:
            continue
        local = []
        for k in range(1, len(tok)):
            l, r = tok[:k], tok[k:]
            if l in vocab and r in vocab and vocab[l] >= n_fixed and vocab[r] >= n_fixed:
                local.append((vocab[l], vocab[r], l, r))
        local.sort()
        merges += [(l, r) for _, _, l, r in local]
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1", special_tokens=[("<s>", 1)])
    config = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
              "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
              "model_max_length": 4096}
    return tok, config


LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                   "<|end_header_id|>", "<|eot_id|>"]


def train_bytelevel(texts):
    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), "isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tr = trainers.BpeTrainer(vocab_size=3000, special_tokens=LLAMA3_SPECIALS,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                             show_progress=False)
    t.train_from_iterator(texts, tr)
    return t


def bpe_model_from(trained, ignore_merges):
    d = json.loads(trained.to_str())["model"]
    d["ignore_merges"] = ignore_merges
    return d


def assemble(model_dict, normalizer, pre, decoder, post, added):
    """A tokenizer from a model JSON dict plus pipeline parts (tokenizers has no Python setter for
    ignore_merges, so the model goes through JSON)."""
    t = Tokenizer(models.BPE())
    d = json.loads(t.to_str())
    d["model"] = model_dict
    t = Tokenizer.from_str(json.dumps(d))
    if normalizer is not None:
        t.normalizer = normalizer
    t.pre_tokenizer = pre
    t.decoder = decoder
    if post is not None:
        t.post_processor = post
    for a in added:
        if a.special:
            t.add_special_tokens([a])
        else:
            t.add_tokens([a])
    return t


def build_llama3(trained):
    model = bpe_model_from(trained, True)
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), "isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    post = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(
            single="<|begin_of_text|> $A",
            pair="<|begin_of_text|> $A <|begin_of_text|>:1 $B:1",
            special_tokens=[("<|begin_of_text|>", model["vocab"]["<|begin_of_text|>"])])])
    added = [AddedToken(s, special=True, normalized=False) for s in LLAMA3_SPECIALS]
    tok = assemble(model, None, pre, decoders.ByteLevel(), post, added)
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
              "eos_token": "<|eot_id|>", "model_max_length": 131072}
    return tok, config


QWEN2_ADDED = [
    AddedToken("<|endoftext|>", special=True, normalized=False),
    AddedToken("<|im_start|>", special=True, normalized=False),
    AddedToken("<|im_end|>", special=True, normalized=False),
    AddedToken("<mask>", special=True, normalized=False, lstrip=True),
    AddedToken("<tool_call>", special=False, normalized=False, rstrip=True),
    AddedToken("[WORD]", special=False, normalized=False, single_word=True),
    AddedToken("cafe\u0301", special=False, normalized=True),
]


def build_qwen2(trained, gguf_equivalent=False):
    model = bpe_model_from(trained, False)
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_REGEX), "isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    added = QWEN2_ADDED
    if gguf_equivalent:  # GGUF keeps only the token type: no flags, matched on the raw text
        added = [AddedToken(a.content, special=a.special, normalized=False) for a in added]
    tok = assemble(model, normalizers.NFC(), pre, decoders.ByteLevel(),
                   processors.ByteLevel(trim_offsets=False), added)
    config = {"tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "eos_token": "<|im_end|>",
              "pad_token": "<|endoftext|>", "add_prefix_space": False, "model_max_length": 32768}
    return tok, config


def build_smollm2(model_path):
    from gguf import GGUFReader

    r = GGUFReader(model_path)

    def strs(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    def ints(key):
        f = r.fields[key]
        return [int(f.parts[i][0]) for i in f.data]

    pre = bytes(r.fields["tokenizer.ggml.pre"].parts[-1]).decode()
    assert pre == "smollm", pre
    tokens = strs("tokenizer.ggml.tokens")
    types = ints("tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ")) for m in strs("tokenizer.ggml.merges")]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab, merges))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == 3])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


# ---- GGUF variants ----


def write_gguf(path, tok, model, pre=None, add_bos=False, bos=None, eos=None, unk=None,
               add_space_prefix=None, spm_scores=False):
    import gguf

    vocab = tok.get_vocab(with_added_tokens=True)
    n = max(vocab.values()) + 1
    tokens = [None] * n
    for s, i in vocab.items():
        tokens[i] = s
    assert all(t is not None for t in tokens)
    added = tok.get_added_tokens_decoder()
    types = []
    for i, s in enumerate(tokens):
        if i in added:
            types.append(gguf.TokenType.CONTROL if added[i].special
                         else gguf.TokenType.USER_DEFINED)
            if s == "<unk>":
                types[-1] = gguf.TokenType.UNKNOWN
        elif spm_scores and s.startswith("<0x") and len(s) == 6:
            types.append(gguf.TokenType.BYTE)
        else:
            types.append(gguf.TokenType.NORMAL)
    w = gguf.GGUFWriter(path, "llama")
    w.add_tokenizer_model(model)
    if pre:
        w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    if spm_scores:
        w.add_token_scores([0.0 if t != gguf.TokenType.NORMAL else -float(i)
                            for i, t in enumerate(types)])
    else:
        m = json.loads(tok.to_str())["model"]["merges"]
        w.add_token_merges([" ".join(x) if isinstance(x, list) else x for x in m])
    if bos is not None:
        w.add_bos_token_id(bos)
    if eos is not None:
        w.add_eos_token_id(eos)
    if unk is not None:
        w.add_unk_token_id(unk)
    w.add_add_bos_token(add_bos)
    w.add_add_eos_token(False)
    if add_space_prefix is not None:
        w.add_add_space_prefix(add_space_prefix)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ---- expectations ----


def expectations(name, tok, corpus, gguf_tok=None, subset=None):
    for probe in ("x", "X", "hello", "A1"):
        plain = tok.encode(probe, add_special_tokens=False).ids
        if plain:
            break
    full = tok.encode(probe, add_special_tokens=True).ids
    k = full.index(plain[0])
    prefix, suffix = full[:k], full[k + len(plain):]
    lines = [json.dumps({"tokenizer": name, "n": len(corpus), "prefix": prefix, "suffix": suffix})]
    for i, s in enumerate(corpus):
        if subset is not None and i % subset:
            continue
        tok.encode_special_tokens = False
        ids = tok.encode(s, add_special_tokens=False).ids
        full = tok.encode(s, add_special_tokens=True).ids
        assert full == prefix + ids + suffix, (name, s)
        rec = {"ids": ids} if subset is None else {"i": i, "ids": ids}
        tok.encode_special_tokens = True
        nosp = tok.encode(s, add_special_tokens=False).ids
        tok.encode_special_tokens = False
        if nosp != ids:
            rec["nosp"] = nosp
        try:
            dec = tok.decode(ids, skip_special_tokens=False)
            dskip = tok.decode(ids, skip_special_tokens=True)
            dbos = tok.decode(prefix + ids + suffix, skip_special_tokens=True)
        except BaseException:  # HF's Strip decoder with stop > 0 panics on an empty string
            rec["nodec"] = 1
            dec = dskip = dbos = None
        if dec is not None and dec != s:
            rec["dec"] = dec
        if dskip != dec:
            rec["dec_skip"] = dskip
        if dbos != dskip:
            rec["dec_bos"] = dbos
        if gguf_tok is not None:
            g = gguf_tok.encode(s, add_special_tokens=False).ids
            if g != ids:
                rec["gguf"] = g
        lines.append(json.dumps(rec, ensure_ascii=False, separators=(",", ":")))
    return "\n".join(lines) + "\n"


# ---- pipeline variants ----


def variant_specs(vocab_spm, vocab_l3):
    """name -> (base, function that edits a Tokenizer built from the base)."""
    t3 = processors.TemplateProcessing(
        single="<|begin_of_text|> $A <|end_of_text|>", pair="<|begin_of_text|> $A $B:1",
        special_tokens=[("<|begin_of_text|>", vocab_l3["<|begin_of_text|>"]),
                        ("<|end_of_text|>", vocab_l3["<|end_of_text|>"])])
    tspm = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A $B:1", special_tokens=[("<s>", 1), ("</s>", 2)])

    def bl_lower(t):
        t.normalizer = normalizers.Sequence([
            normalizers.NFKC(), normalizers.Lowercase(), normalizers.Strip(),
            normalizers.Replace(Regex(r"\s+"), " ")])
        t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
        t.post_processor = t3

    def bl_splits(t):
        t.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex("[,.;:!?]"), "merged_with_previous"),
            pre_tokenizers.Digits(individual_digits=False),
            pre_tokenizers.Split(" ", "merged_with_next"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])

    def bl_words(t):
        t.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("contiguous"),
            pre_tokenizers.Split(Regex(r"\p{Lu}"), "removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        t.add_tokens([AddedToken("<tool>", special=False, normalized=False, lstrip=True)])

    def bl_ws(t):
        t.normalizer = normalizers.Strip(left=False, right=True)
        t.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Whitespace(),
            pre_tokenizers.Split(Regex("[aeiou]"), "isolated", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])

    def meta_first(t):
        t.normalizer = None
        t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first",
                                                   split=True)
        t.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        t.post_processor = tspm
        t.add_special_tokens([AddedToken("<mask>", special=True, lstrip=True, rstrip=True)])
        t.add_tokens([AddedToken("hello", special=False, normalized=True)])

    def meta_always(t):
        t.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase()])
        t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always",
                                                   split=False)
        t.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                       decoders.Fuse(), decoders.Strip(" ", 1, 1)])
        t.add_tokens([AddedToken("H\u00e9llo", special=False, normalized=True)])

    def spm_unk(t):
        t.decoder = None

    def spm_nounk(t):
        t.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse(),
                                       decoders.Strip(" ", 2, 0)])
        t.add_tokens([AddedToken("world", special=False, normalized=True),
                      AddedToken("<sep>", special=False, normalized=False, rstrip=True)])

    return {
        "bl_lower": ("llama3", bl_lower, {}),
        "bl_splits": ("llama3", bl_splits, {}),
        "bl_words": ("llama3", bl_words, {"ignore_merges": False}),
        "bl_ws": ("llama3", bl_ws, {}),
        "meta_first": ("spm", meta_first, {}),
        "meta_always": ("spm", meta_always, {}),
        "spm_unk": ("spm", spm_unk, {"byte_fallback": False, "fuse_unk": False}),
        "spm_nounk": ("spm", spm_nounk, {"byte_fallback": False, "fuse_unk": True,
                                         "unk_token": None}),
    }


def build_variant(base_tok, edit, model_opts):
    d = json.loads(base_tok.to_str())
    d["model"].update(model_opts)
    t = Tokenizer.from_str(json.dumps(d))
    edit(t)
    full = json.loads(t.to_str())
    spec = {k: full[k] for k in ("normalizer", "pre_tokenizer", "post_processor", "decoder",
                                 "added_tokens")}
    spec["model"] = model_opts
    return t, spec


def save_hf(dirpath, tok, config):
    os.makedirs(dirpath, exist_ok=True)
    tok.save(os.path.join(dirpath, "tokenizer.json"))
    with open(os.path.join(dirpath, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="default model GGUF (default: tools/fetch_model.sh)")
    ap.add_argument("out_dir", nargs="?", default=os.path.join(ROOT, "tests/fixtures/tokenizers"))
    a = ap.parse_args()
    model = a.model or subprocess.run([os.path.join(ROOT, "tools/fetch_model.sh")],
                                      capture_output=True, text=True, check=True).stdout.strip()
    out = a.out_dir
    os.makedirs(out, exist_ok=True)

    corpus = make_corpus()
    with open(os.path.join(out, "corpus.jsonl"), "w", encoding="utf-8") as f:
        for s in corpus:
            f.write(json.dumps(s, ensure_ascii=False) + "\n")
    texts = training_texts([s for s in corpus if s not in NUL_STRINGS])

    spm, spm_cfg = build_spm(texts)
    save_hf(os.path.join(out, "spm"), spm, spm_cfg)
    write_gguf(os.path.join(out, "spm.gguf"), spm, "llama", add_bos=True, bos=1, eos=2, unk=0,
               add_space_prefix=True, spm_scores=True)

    trained = train_bytelevel(texts)
    l3, l3_cfg = build_llama3(trained)
    save_hf(os.path.join(out, "llama3"), l3, l3_cfg)
    v = l3.get_vocab()
    write_gguf(os.path.join(out, "llama3.gguf"), l3, "gpt2", pre="llama-bpe", add_bos=True,
               bos=v["<|begin_of_text|>"], eos=v["<|eot_id|>"])

    qw, qw_cfg = build_qwen2(trained)
    save_hf(os.path.join(out, "qwen2"), qw, qw_cfg)
    qw_g, _ = build_qwen2(trained, gguf_equivalent=True)
    v = qw.get_vocab()
    write_gguf(os.path.join(out, "qwen2.gguf"), qw_g, "gpt2", pre="qwen2",
               eos=v["<|im_end|>"])

    specs = {}
    bases = {"spm": spm, "llama3": l3}
    for name, (base, edit, opts) in variant_specs(spm.get_vocab(), l3.get_vocab()).items():
        vt, spec = build_variant(bases[base], edit, opts)
        specs[name] = {"base": base, **spec}
        with open(os.path.join(out, f"expected_v_{name}.jsonl"), "w", encoding="utf-8") as f:
            f.write(expectations(name, vt, corpus, subset=4))
    with open(os.path.join(out, "variants.json"), "w", encoding="utf-8") as f:
        json.dump(specs, f, indent=1, ensure_ascii=False)
        f.write("\n")

    sm = build_smollm2(model)
    for name, tok, g in [("spm", spm, None), ("llama3", l3, None), ("qwen2", qw, qw_g),
                         ("smollm2", sm, None)]:
        with open(os.path.join(out, f"expected_{name}.jsonl"), "w", encoding="utf-8") as f:
            f.write(expectations(name, tok, corpus, g))
    total = 0
    for dp, _, fs in os.walk(out):
        for fn in fs:
            total += os.path.getsize(os.path.join(dp, fn))
    print(f"{len(corpus)} strings, fixtures {total / 1e6:.2f} MB in {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
