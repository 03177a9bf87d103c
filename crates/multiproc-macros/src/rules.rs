//! The compile-time rules of `#[multiproc::task]`: what a worker process can
//! call by name with arguments decoded from msgpack, and the message that
//! says what to write instead of what it cannot.
//!
//! Each rule here has a `compile_fail` example on the `multiproc::guide::tasks`
//! page and a unit test below; the messages name the fix, not the theory.

use proc_macro2::{TokenStream, TokenTree};
use quote::ToTokens;
use syn::{FnArg, GenericParam, ReturnType, Signature, Type};

/// Every rule `sig` breaks, as one error (all of them at once, each at the
/// span of the offending part).
pub(crate) fn check_task_signature(sig: &Signature) -> syn::Result<()> {
    let mut errors = Errors::default();
    if let Some(unsafety) = &sig.unsafety {
        errors.push(syn::Error::new_spanned(
            unsafety,
            "a task cannot be an `unsafe fn`: a worker calls it with nobody to uphold its safety contract; \
             register a safe wrapper that checks the contract and calls this function",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(syn::Error::new_spanned(
            variadic,
            "a task cannot be variadic: take the values as one `Vec<T>` argument",
        ));
    }
    for param in &sig.generics.params {
        let message = match param {
            GenericParam::Lifetime(_) => {
                "a task cannot have lifetime parameters: its arguments are decoded in another process, so they \
                 must be owned (`String` instead of `&'a str`, `Vec<T>` instead of `&'a [T]`)"
            }
            GenericParam::Type(_) => {
                "a task cannot be generic: a worker finds a task by its name, and a generic fn has one body per \
                 type; register one non-generic task per type you need (`#[multiproc::task] fn total_u64(xs: \
                 Vec<u64>) -> u64 { total(xs) }`)"
            }
            GenericParam::Const(_) => {
                "a task cannot have const parameters: register one task per value, or pass the value as an argument"
            }
        };
        errors.push(syn::Error::new_spanned(param, message));
    }
    if let Some(clause) = &sig.generics.where_clause {
        errors.push(syn::Error::new_spanned(
            clause,
            "a task cannot have a `where` clause: it must not be generic; write the concrete types",
        ));
    }
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(receiver) => errors.push(syn::Error::new_spanned(
                receiver,
                "a task cannot take `self`: tasks are free functions found by name; move it out of the `impl` \
                 block and pass the value as an ordinary argument (for a Python `Process` subclass with \
                 `run(self)`, implement `multiproc::Target` and put #[multiproc::target] on that impl)",
            )),
            FnArg::Typed(arg) => check_owned(&arg.ty, Position::Argument, &mut errors),
        }
    }
    if let ReturnType::Type(_, ty) = &sig.output {
        check_owned(ty, Position::Return, &mut errors);
    }
    errors.finish()
}

#[derive(Clone, Copy, PartialEq)]
enum Position {
    Argument,
    Return,
}

/// Refuses references, non-`'static` lifetimes and `impl Trait` anywhere in
/// `ty` (one error per offence, at its span).
fn check_owned(ty: &Type, position: Position, errors: &mut Errors) {
    if let Type::Reference(reference) = ty {
        let owned = owned_twin(&reference.elem);
        let message = match position {
            Position::Argument => format!(
                "task arguments must be owned: `{}` borrows from the caller, but the worker decodes its own copy \
                 in another process; take `{owned}` instead",
                tokens(ty)
            ),
            Position::Return => format!(
                "a task must return an owned value: `{}` cannot outlive the call in the worker; return `{owned}` \
                 instead",
                tokens(ty)
            ),
        };
        errors.push(syn::Error::new_spanned(ty, message));
        return;
    }
    scan(ty.to_token_stream(), ty, position, errors);
}

/// Walks the tokens of a type (nested generics included).
fn scan(stream: TokenStream, whole: &Type, position: Position, errors: &mut Errors) {
    let mut tokens = stream.into_iter().peekable();
    while let Some(token) = tokens.next() {
        match &token {
            TokenTree::Group(group) => scan(group.stream(), whole, position, errors),
            TokenTree::Punct(p) if p.as_char() == '&' => {
                errors.push(syn::Error::new(
                    p.span(),
                    format!(
                        "task {} must be owned: `{}` holds a reference, and a value decoded in another process \
                         cannot borrow; use owned types inside it (`String` for `&str`, `Vec<T>` for `&[T]`)",
                        what(position),
                        tokens_of(whole),
                    ),
                ));
            }
            TokenTree::Punct(p) if p.as_char() == '\'' => {
                let name = match tokens.peek() {
                    Some(TokenTree::Ident(ident)) => ident.to_string(),
                    _ => String::new(),
                };
                if name != "static" {
                    errors.push(syn::Error::new(
                        p.span(),
                        format!(
                            "task {} must be owned: `{}` borrows for the lifetime `'{name}`, and a value decoded \
                             in another process cannot borrow; use the owned form (`Cow<'static, str>` or \
                             `String`, not `Cow<'_, str>`)",
                            what(position),
                            tokens_of(whole),
                        ),
                    ));
                }
            }
            TokenTree::Ident(ident) if ident == "impl" => {
                let message = match position {
                    Position::Argument => {
                        "a task cannot take `impl Trait`: that makes it generic, and a worker finds a task by \
                         name; name the concrete type"
                    }
                    Position::Return => {
                        "a task must name its return type: the caller decodes the result, so `impl Trait` cannot \
                         cross the process boundary; write the concrete type"
                    }
                };
                errors.push(syn::Error::new(ident.span(), message));
            }
            _ => {}
        }
    }
}

fn what(position: Position) -> &'static str {
    match position {
        Position::Argument => "arguments",
        Position::Return => "results",
    }
}

/// What to write instead of `&elem`.
fn owned_twin(elem: &Type) -> String {
    match elem {
        Type::Slice(slice) => format!("Vec<{}>", tokens(&slice.elem)),
        Type::Path(path) if path.qself.is_none() => {
            let last = path.path.segments.last().map(|s| s.ident.to_string()).unwrap_or_default();
            match last.as_str() {
                "str" => "String".to_owned(),
                "Path" => "PathBuf".to_owned(),
                "OsStr" => "OsString".to_owned(),
                "CStr" => "CString".to_owned(),
                _ => tokens(elem),
            }
        }
        Type::TraitObject(_) => format!("Box<{}>", tokens(elem)),
        _ => tokens(elem),
    }
}

fn tokens(ty: &Type) -> String {
    tokens_of(ty)
}

/// `ty` as the user wrote it, without the spaces the token printer adds.
fn tokens_of(ty: &Type) -> String {
    let printed = ty.to_token_stream().to_string();
    let mut out = String::with_capacity(printed.len());
    let mut chars = printed.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ' ' {
            let next = chars.peek().copied().unwrap_or(' ');
            let prev = out.chars().last().unwrap_or(' ');
            // Keep the spaces that separate words (`dyn Error`, `'a str`).
            let word = |ch: char| ch.is_alphanumeric() || ch == '_';
            if (word(prev) && (word(next) || next == '\'')) || prev == ',' || next == '+' || prev == '+' {
                out.push(' ');
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Errors collected so the user sees every broken rule at once.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(sig: syn::ItemFn) -> Vec<String> {
        match check_task_signature(&sig.sig) {
            Ok(()) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    fn one(sig: syn::ItemFn) -> String {
        let all = messages(sig);
        assert_eq!(all.len(), 1, "expected one error, got {all:#?}");
        all.into_iter().next().expect("checked the length")
    }

    #[test]
    fn owned_arguments_and_results_pass() {
        assert!(
            messages(syn::parse_quote!(
                fn f(a: String, b: Vec<u8>, c: (u32, Option<String>)) -> u64 {}
            ))
            .is_empty()
        );
        assert!(
            messages(syn::parse_quote!(
                async fn f(a: std::borrow::Cow<'static, str>) -> Result<u64, E> {}
            ))
            .is_empty()
        );
        assert!(
            messages(syn::parse_quote!(
                fn f((a, b): (u32, u32), mut c: u8, _: ()) {}
            ))
            .is_empty()
        );
    }

    #[test]
    fn a_borrowed_str_suggests_string() {
        let m = one(syn::parse_quote!(
            fn f(name: &str) {}
        ));
        assert!(m.contains("must be owned") && m.contains("`&str`") && m.contains("take `String` instead"), "{m}");
    }

    #[test]
    fn a_borrowed_slice_suggests_vec() {
        let m = one(syn::parse_quote!(
            fn f(data: &[u8]) {}
        ));
        assert!(m.contains("take `Vec<u8>` instead"), "{m}");
        let m = one(syn::parse_quote!(
            fn f(p: &std::path::Path) {}
        ));
        assert!(m.contains("take `PathBuf` instead"), "{m}");
    }

    #[test]
    fn a_reference_nested_in_a_type_is_refused() {
        let m = one(syn::parse_quote!(
            fn f(names: Vec<&str>) {}
        ));
        assert!(m.contains("`Vec<&str>` holds a reference"), "{m}");
    }

    #[test]
    fn a_non_static_lifetime_is_refused_and_static_passes() {
        let m = one(syn::parse_quote!(
            fn f(s: Cow<'_, str>) {}
        ));
        assert!(m.contains("lifetime `'_`"), "{m}");
        assert!(
            messages(syn::parse_quote!(
                fn f(s: Cow<'static, str>) {}
            ))
            .is_empty()
        );
    }

    #[test]
    fn a_borrowed_result_suggests_an_owned_one() {
        let m = one(syn::parse_quote!(
            fn f() -> &'static str {}
        ));
        assert!(m.contains("must return an owned value") && m.contains("return `String` instead"), "{m}");
    }

    #[test]
    fn generics_are_refused_with_the_fix() {
        let m = one(syn::parse_quote!(
            fn f<T: Copy>(x: T) -> T {}
        ));
        assert!(m.contains("cannot be generic") && m.contains("one non-generic task per type"), "{m}");
        let m = one(syn::parse_quote!(
            fn f<'a>(x: String) {}
        ));
        assert!(m.contains("lifetime parameters"), "{m}");
        let m = one(syn::parse_quote!(
            fn f<const N: usize>(x: u8) {}
        ));
        assert!(m.contains("const parameters"), "{m}");
        let m = one(syn::parse_quote!(
            fn f(x: impl Into<u64>) {}
        ));
        assert!(m.contains("cannot take `impl Trait`"), "{m}");
        let m = one(syn::parse_quote!(
            fn f() -> impl Serialize {}
        ));
        assert!(m.contains("must name its return type"), "{m}");
    }

    #[test]
    fn self_unsafe_and_variadics_are_refused() {
        let m = one(syn::parse_quote!(
            fn f(&self, x: u8) {}
        ));
        assert!(m.contains("cannot take `self`") && m.contains("#[multiproc::target]"), "{m}");
        let m = one(syn::parse_str("unsafe fn f(x: u8) {}").expect("an item"));
        assert!(m.contains("`unsafe fn`"), "{m}");
    }

    #[test]
    fn every_broken_rule_is_reported_at_once() {
        let all = messages(syn::parse_quote!(
            fn f<T>(a: &str, b: &[u8]) -> &str {}
        ));
        assert_eq!(all.len(), 4, "{all:#?}");
    }
}
