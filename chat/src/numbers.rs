//! Numbers as a reader finds them in text: integers and decimals with thousands
//! separators, a sign and scientific notation; a digit glued to a letter (`x2`, `v1`)
//! is part of a name. The agent checks answers against computed results with it, and
//! `ask` finds which passages a program's figures came from.

use std::ops::Range;

/// The numbers in `text`, in order: integers and decimals, with thousands separators
/// (`1,234`), a sign, and scientific notation.
pub fn numbers(text: &str) -> Vec<f64> {
    number_spans(text).into_iter().map(|(_, n)| n).collect()
}

/// The numbers of [`numbers`] with the bytes each is written in (its sign included).
pub fn number_spans(text: &str) -> Vec<(Range<usize>, f64)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let starts =
            c.is_ascii_digit() || (c == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit));
        // A digit glued to a letter before it (x2, v1) is part of a name.
        let glued = i > 0
            && (bytes[i - 1].is_ascii_alphabetic()
                || bytes[i - 1] == b'_'
                || (c == b'.' && bytes[i - 1].is_ascii_digit()));
        if !starts || glued {
            i += 1;
            continue;
        }
        let negative = i > 0 && bytes[i - 1] == b'-' && (i < 2 || !bytes[i - 2].is_ascii_digit());
        let mut j = i;
        let mut digits = String::new();
        while j < bytes.len() {
            let b = bytes[j];
            if b.is_ascii_digit() || b == b'.' {
                if b == b'.' && !bytes.get(j + 1).is_some_and(u8::is_ascii_digit) {
                    break;
                }
                if b == b'.' && digits.contains('.') {
                    break;
                }
                digits.push(b as char);
                j += 1;
            } else if b == b','
                && bytes
                    .get(j + 1..j + 4)
                    .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
                && !bytes.get(j + 4).is_some_and(u8::is_ascii_digit)
                && !digits.contains('.')
            {
                j += 1;
            } else if (b == b'e' || b == b'E')
                && bytes
                    .get(j + 1)
                    .is_some_and(|d| d.is_ascii_digit() || *d == b'-')
                && !digits.is_empty()
            {
                let mut k = j + 1;
                let mut exp = String::from("e");
                if bytes[k] == b'-' {
                    exp.push('-');
                    k += 1;
                }
                let digits_start = k;
                while k < bytes.len() && bytes[k].is_ascii_digit() {
                    exp.push(bytes[k] as char);
                    k += 1;
                }
                if k == digits_start || bytes.get(k).is_some_and(u8::is_ascii_alphabetic) {
                    break;
                }
                digits.push_str(&exp);
                j = k;
                break;
            } else {
                break;
            }
        }
        if let Ok(value) = digits.parse::<f64>() {
            let start = if negative { i - 1 } else { i };
            out.push((start..j, if negative { -value } else { value }));
        }
        i = j.max(i + 1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_read_like_a_person_would() {
        let cases: [(&str, &[f64]); 9] = [
            ("She makes $18 a day.", &[18.0]),
            ("1,234,567 and 3.5", &[1_234_567.0, 3.5]),
            ("x2 is not a number, but 2 is", &[2.0]),
            ("It fell by -5 degrees", &[-5.0]),
            ("5-3", &[5.0, 3.0]),
            ("1e3 meters", &[1000.0]),
            ("version 1.2.3", &[1.2, 3.0]),
            ("The end.", &[]),
            ("(1, 2)", &[1.0, 2.0]),
        ];
        for (text, want) in cases {
            assert_eq!(numbers(text), want, "{text:?}");
        }
    }

    #[test]
    fn spans_cover_the_sign_and_separators() {
        let text = "From -5 to 1,234.";
        let spans: Vec<&str> = number_spans(text)
            .into_iter()
            .map(|(r, _)| &text[r])
            .collect();
        assert_eq!(spans, ["-5", "1,234"]);
    }
}
