//! Writes a JSON value in a random but valid spelling: whitespace around any token, keys
//! in any order, characters and `/` escaped at random, integers as `3`, `3.0` or `3e0`.

use serde_json::Value;

pub(super) struct Speller {
    state: u64,
    /// Whether whitespace may include line breaks (not inside an NDJSON line).
    newlines: bool,
}

impl Speller {
    pub(super) fn new(seed: u64, newlines: bool) -> Speller {
        Speller {
            state: seed | 1,
            newlines,
        }
    }

    /// xorshift64*: plenty for choosing spellings.
    pub(super) fn next(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(super) fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }

    pub(super) fn spell(&mut self, value: &Value) -> String {
        let mut out = String::new();
        self.space(&mut out);
        self.value(value, &mut out);
        self.space(&mut out);
        out
    }

    fn space(&mut self, out: &mut String) {
        match self.next() % 8 {
            0 => out.push(' '),
            1 => out.push_str("  "),
            2 => out.push('\t'),
            3 if self.newlines => out.push_str("\n  "),
            4 if self.newlines => out.push('\n'),
            _ => {}
        }
    }

    fn value(&mut self, value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                for i in (1..entries.len()).rev() {
                    let j = (self.next() % (i as u64 + 1)) as usize;
                    entries.swap(i, j);
                }
                out.push('{');
                for (i, (key, item)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        self.space(out);
                        out.push(',');
                    }
                    self.space(out);
                    self.string(key, out);
                    self.space(out);
                    out.push(':');
                    self.space(out);
                    self.value(item, out);
                }
                self.space(out);
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.space(out);
                        out.push(',');
                    }
                    self.space(out);
                    self.value(item, out);
                }
                self.space(out);
                out.push(']');
            }
            Value::String(text) => self.string(text, out),
            Value::Number(n) if n.is_u64() => match self.next() % 4 {
                0 => out.push_str(&format!("{n}.0")),
                1 => out.push_str(&format!("{n}e0")),
                _ => out.push_str(&n.to_string()),
            },
            other => out.push_str(&other.to_string()),
        }
    }

    fn string(&mut self, text: &str, out: &mut String) {
        out.push('"');
        for c in text.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' if self.one_in(2) => out.push_str("\\n"),
                '/' if self.one_in(2) => out.push_str("\\/"),
                c if (c as u32) < 0x20 || self.one_in(6) => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}
