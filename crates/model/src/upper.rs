//! 价税合计（大写）: amounts in Chinese financial upper-case, as the 数电票 prints them.
//!
//! Rules (1)–(4) of the upper-case amount rules annexed to the People's Bank of China payment
//! settlement measures (支付结算办法 附件一), written the way the official 数电票 writes them:
//! - digits 零壹贰叁肆伍陆柒捌玖, units 拾佰仟万亿, 圆角分 (圆, not 元);
//! - 整 after 圆 when there are no 角/分; never after 角 or 分;
//! - one 零 for a run of zeros inside the number;
//! - 零 after 圆 when the 角 digit is zero and the 分 is not (rule 4);
//! - where rule (3) leaves a choice (the 圆 digit is zero and the 角 is not, e.g. 1680.32), the
//!   零 after 圆 is written: 壹仟陆佰捌拾圆零叁角贰分;
//! - a number starts 壹拾, never a bare 拾;
//! - red (negative) amounts are prefixed with （负数） in full-width parentheses.

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use crate::money::Amount;

const DIGITS: [char; 10] = ['零', '壹', '贰', '叁', '肆', '伍', '陆', '柒', '捌', '玖'];
const NEGATIVE_PREFIX: &str = "（负数）";

/// Writes an amount in Chinese financial upper-case, e.g. `12360.00` → `壹万贰仟叁佰陆拾圆整`,
/// `-0.50` → `（负数）伍角`.
#[must_use]
pub fn to_chinese_upper(amount: Amount) -> String {
    let mut out = String::new();
    if amount.is_negative() {
        out.push_str(NEGATIVE_PREFIX);
    }
    let fen_total = (amount.value().abs() * Decimal::ONE_HUNDRED)
        .to_u64()
        .expect("an Amount has at most 13 integer digits, which fits u64 fen");
    let yuan = fen_total / 100;
    let jiao = fen_total / 10 % 10;
    let fen = fen_total % 10;

    if yuan == 0 && fen_total == 0 {
        out.push_str("零圆整");
        return out;
    }
    if yuan > 0 {
        write_integer(yuan, &mut out);
        out.push('圆');
    }
    if jiao == 0 && fen == 0 {
        out.push('整');
        return out;
    }
    // Rule (4) (角 zero, 分 not) and the chosen side of rule (3) (圆 digit zero, 角 not).
    if yuan > 0 && (jiao == 0 || yuan.is_multiple_of(10)) {
        out.push('零');
    }
    if jiao > 0 {
        out.push(digit(jiao));
        out.push('角');
    }
    if fen > 0 {
        out.push(digit(fen));
        out.push('分');
    }
    out
}

/// Reads an upper-case amount back (the inverse of [`to_chinese_upper`], used to check it).
///
/// Returns `None` for text that is not an upper-case amount.
#[must_use]
pub fn parse_chinese_upper(text: &str) -> Option<Amount> {
    let (negative, body) = match text.strip_prefix(NEGATIVE_PREFIX) {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int_text, frac_text) = match body.split_once('圆') {
        Some((i, f)) => (i, f),
        None => ("", body),
    };
    if int_text.is_empty() && !body.contains('圆') && frac_text.is_empty() {
        return None;
    }
    let yuan = parse_integer(int_text)?;
    let frac_text = frac_text.strip_suffix('整').unwrap_or(frac_text);
    let mut fen_total = yuan.checked_mul(100)?;
    let mut chars = frac_text.chars().filter(|&c| c != '零').peekable();
    while let Some(c) = chars.next() {
        let d = digit_value(c)?;
        match chars.next()? {
            '角' => fen_total += d * 10,
            '分' => fen_total += d,
            _ => return None,
        }
    }
    let value = Decimal::new(i64::try_from(fen_total).ok()?, 2);
    let amount = Amount::from_rounded(if negative { -value } else { value });
    Some(amount)
}

fn digit(d: u64) -> char {
    DIGITS[usize::try_from(d).expect("a decimal digit fits usize")]
}

fn digit_value(c: char) -> Option<u64> {
    DIGITS.iter().position(|&d| d == c).map(|p| p as u64)
}

/// Writes n > 0 with 万/亿 sections; one 零 for every run of zeros between non-zero digits.
fn write_integer(n: u64, out: &mut String) {
    const YI: u64 = 100_000_000;
    const WAN: u64 = 10_000;
    if n >= YI {
        write_integer(n / YI, out);
        out.push('亿');
        let low = n % YI;
        if low > 0 {
            if low < YI / 10 {
                out.push('零');
            }
            write_integer(low, out);
        }
    } else if n >= WAN {
        write_group(n / WAN, out);
        out.push('万');
        let low = n % WAN;
        if low > 0 {
            if low < WAN / 10 {
                out.push('零');
            }
            write_group(low, out);
        }
    } else {
        write_group(n, out);
    }
}

/// Writes 0 < n < 10000 without leading or trailing zeros.
fn write_group(n: u64, out: &mut String) {
    const UNITS: [Option<char>; 4] = [Some('仟'), Some('佰'), Some('拾'), None];
    let digits = [n / 1000, n / 100 % 10, n / 10 % 10, n % 10];
    let first = digits.iter().position(|&d| d != 0).unwrap_or(3);
    let mut pending_zero = false;
    for (i, &d) in digits.iter().enumerate().skip(first) {
        if d == 0 {
            pending_zero = true;
            continue;
        }
        if pending_zero {
            out.push('零');
            pending_zero = false;
        }
        out.push(digit(d));
        if let Some(unit) = UNITS[i] {
            out.push(unit);
        }
    }
}

fn parse_integer(text: &str) -> Option<u64> {
    let (mut total, mut section, mut number) = (0_u64, 0_u64, 0_u64);
    let mut saw_any = false;
    for c in text.chars() {
        saw_any = true;
        match c {
            '零' => {}
            '拾' => section += number.checked_mul(10)?,
            '佰' => section += number.checked_mul(100)?,
            '仟' => section += number.checked_mul(1000)?,
            '万' => section = (section + number).checked_mul(10_000)?,
            '亿' => {
                total = (total + section + number).checked_mul(100_000_000)?;
                section = 0;
            }
            other => {
                number = digit_value(other)?;
                continue;
            }
        }
        number = 0;
    }
    // Only 零 itself may spell zero ("零圆整"); any other text summing to zero is malformed.
    if saw_any && total + section + number == 0 && text != "零" {
        return None;
    }
    Some(total + section + number)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upper(s: &str) -> String {
        to_chinese_upper(Amount::parse(s).unwrap())
    }

    #[test]
    fn small_and_edge_amounts() {
        assert_eq!(upper("0.05"), "伍分");
        assert_eq!(upper("0.00"), "零圆整");
        assert_eq!(upper("10"), "壹拾圆整");
        assert_eq!(upper("10.10"), "壹拾圆零壹角");
        assert_eq!(upper("100700"), "壹拾万零柒佰圆整");
        assert_eq!(upper("100000001"), "壹亿零壹圆整");
        assert_eq!(upper("110000000"), "壹亿壹仟万圆整");
        assert_eq!(upper("1000000000000"), "壹万亿圆整");
        assert_eq!(upper("-12360.00"), "（负数）壹万贰仟叁佰陆拾圆整");
    }

    #[test]
    fn parse_reads_back_what_was_written() {
        for s in [
            "0.05",
            "10.10",
            "100700",
            "9999999999999.99",
            "-3.40",
            "1000000000000",
            "0.00",
        ] {
            let a = Amount::parse(s).unwrap();
            assert_eq!(parse_chinese_upper(&to_chinese_upper(a)), Some(a), "{s}");
        }
        assert_eq!(parse_chinese_upper("不是金额"), None);
        assert_eq!(parse_chinese_upper(""), None);
    }
}
