//! `#[multiproc::task]` and `#[multiproc::target]`: register a function or a
//! `Target` type under a stable name so a worker process can find it.
//!
//! Each expands to the item unchanged plus one entry in the `TASKS`
//! distributed slice (declared in `multiproc-sys`, re-exported by
//! `multiproc::__private`): the name (`module_path!()::ident`), a key to
//! find the entry from the item's type, the Rust signature as a
//! fingerprint, and a shim that decodes msgpack arguments, calls the item
//! and encodes its result. The entry's link-section static is written by
//! the slice's own macro in `multiproc-sys`, so the expansion is accepted
//! by a crate with `#![forbid(unsafe_code)]`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod hosted;

use proc_macro::TokenStream;
use quote::{format_ident, quote};
use syn::{FnArg, Item, ItemFn, ItemImpl, ReturnType, Type, parse_macro_input};

mod rules;

mod main_attr;

/// `#[tokio::main]` (same arguments) with `multiproc::init()` run first,
/// before the runtime starts: processes of the tree take their roles after
/// every constructor (C and C++ static initialisers of linked libraries
/// included) and std's set-up.
#[proc_macro_attribute]
pub fn main(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func = parse_macro_input!(item as ItemFn);
    match main_attr::expand(attr.into(), func) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// Registers a `fn` or `async fn` as a task that worker processes can run.
///
/// ```ignore
/// #[multiproc::task]
/// fn resize(image: Vec<u8>, width: u32) -> Result<Vec<u8>, std::io::Error> {
///     todo!()
/// }
///
/// let thumb = pool.apply(resize, (bytes, 64)).await?;
/// ```
///
/// The rules in short (each with examples on the `multiproc::guide::tasks`
/// page):
/// - a free `fn` or `async fn`: no generics, no `impl Trait`, no `self`, no
///   `unsafe fn`;
/// - owned arguments that implement `serde::Deserialize` (`String`, not
///   `&str`; `Vec<T>`, not `&[T]`);
/// - a result that is `Serialize + Deserialize` (returned exactly), or
///   `Result<T, E>` with `E: std::error::Error` or a boxed `dyn Error`
///   (an `Err` arrives as `multiproc::Error::TaskFailed`);
/// - closures cannot be tasks, and globals set by the parent are not seen
///   in the worker: pass values as arguments.
///
/// What the macro can check, it refuses at compile time with a message that
/// says what to write instead.
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(proc_macro2::Span::call_site(), "#[multiproc::task] takes no arguments")
            .to_compile_error()
            .into();
    }
    let func = match syn::parse::<Item>(item) {
        Ok(Item::Fn(func)) => func,
        Ok(other) => {
            return syn::Error::new_spanned(
                other,
                "#[multiproc::task] goes on a free `fn` or `async fn` item (for a type with a `run` method, use \
                 #[multiproc::target] on its `impl multiproc::Target` block)",
            )
            .to_compile_error()
            .into();
        }
        Err(e) => return e.to_compile_error().into(),
    };
    match expand_task(&func) {
        Ok(tokens) => tokens.into(),
        // Keep the function, so the only errors are the rule's own.
        Err(e) => {
            let error = e.to_compile_error();
            quote!(#func #error).into()
        }
    }
}

fn expand_task(func: &ItemFn) -> syn::Result<proc_macro2::TokenStream> {
    let sig = &func.sig;
    rules::check_task_signature(sig)?;
    let ident = &sig.ident;
    let mut types: Vec<&Type> = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Typed(pat) => types.push(&pat.ty),
            FnArg::Receiver(r) => return Err(syn::Error::new_spanned(r, "a task cannot take `self`")),
        }
    }
    let vars: Vec<_> = (0..types.len()).map(|i| format_ident!("__arg{}", i)).collect();
    let ret: proc_macro2::TokenStream = match &sig.output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, ty) => quote!(#ty),
    };
    let static_name = format_ident!("__MULTIPROC_TASK_{}", ident.to_string().to_uppercase());
    let p = quote!(::multiproc::__private);
    // Where the task is defined: the `location` of an error it returns.
    let site = quote::quote_spanned! {ident.span()=>
        #p::TaskSite {
            name: ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#ident)),
            location: ::core::concat!(::core::file!(), ":", ::core::line!(), ":", ::core::column!()),
        }
    };
    // Autoref specialisation picks how the result travels: a serde value
    // as is, else a `Result` whose error is a `std::error::Error` (or a
    // boxed one) as `Error::TaskFailed` (see `registry::encode`).
    let encode_traits = quote! {
        use #p::EncodeOutput as _;
        const __SITE: #p::TaskSite = #site;
    };
    let invoke = if sig.asyncness.is_some() {
        quote! {
            #p::Invoke::Async({
                fn __call(__args: &[u8]) -> #p::BoxFuture<'static, #p::Outcome> {
                    #encode_traits
                    let __decoded: ::core::result::Result<(#(#types,)*), #p::Failure> = #p::decode_args(__args);
                    ::std::boxed::Box::pin(async move {
                        let (#(#vars,)*) = __decoded?;
                        let __result = #ident(#(#vars),*).await;
                        #p::encode_owned(|__out| (&&&#p::Encode(&__result)).encode(&__SITE, __out))
                    })
                }
                __call
            })
        }
    } else {
        quote! {
            #p::Invoke::Sync({
                fn __call(__args: &[u8], __out: &mut ::std::vec::Vec<u8>) -> #p::Written {
                    #encode_traits
                    let (#(#vars,)*): (#(#types,)*) = #p::decode_args(__args)?;
                    (&&&#p::Encode(&#ident(#(#vars),*))).encode(&__SITE, __out)
                }
                __call
            })
        }
    };
    Ok(quote! {
        #func

        #[doc(hidden)]
        #[#p::linkme::distributed_slice(#p::TASKS)]
        #[linkme(crate = #p::linkme)]
        static #static_name: #p::Registered = #p::Registered { entry: &#p::TaskEntry {
            name: ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#ident)),
            key: {
                fn __key() -> ::core::any::TypeId { #p::type_id_of_val(&#ident) }
                __key
            },
            signature: {
                fn __signature() -> &'static str { ::core::any::type_name::<fn(#(#types),*) -> #ret>() }
                __signature
            },
            invoke: #invoke,
        } };
    })
}

/// Registers a `Target` implementation (the twin of a Python `Process`
/// subclass overriding `run`) so `Process::from_target` can start it.
///
/// Put it on the `impl multiproc::Target for YourType` block.
#[proc_macro_attribute]
pub fn target(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(proc_macro2::Span::call_site(), "#[multiproc::target] takes no arguments")
            .to_compile_error()
            .into();
    }
    let imp = parse_macro_input!(item as ItemImpl);
    let ty = &imp.self_ty;
    if imp.trait_.is_none() || !imp.generics.params.is_empty() {
        return syn::Error::new_spanned(
            &imp.self_ty,
            "#[multiproc::target] goes on a non-generic `impl multiproc::Target for Type` block",
        )
        .to_compile_error()
        .into();
    }
    let type_ident = match &**ty {
        Type::Path(tp) => tp.path.segments.last().map(|s| s.ident.clone()),
        _ => None,
    };
    let Some(type_ident) = type_ident else {
        return syn::Error::new_spanned(ty, "expected a named type").to_compile_error().into();
    };
    let static_name = format_ident!("__MULTIPROC_TARGET_{}", type_ident.to_string().to_uppercase());
    let p = quote!(::multiproc::__private);
    quote! {
        #imp

        #[doc(hidden)]
        #[#p::linkme::distributed_slice(#p::TASKS)]
        #[linkme(crate = #p::linkme)]
        static #static_name: #p::Registered = #p::Registered { entry: &#p::TaskEntry {
            name: ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#type_ident)),
            key: {
                fn __key() -> ::core::any::TypeId { ::core::any::TypeId::of::<#ty>() }
                __key
            },
            signature: {
                fn __signature() -> &'static str { ::core::any::type_name::<#ty>() }
                __signature
            },
            invoke: #p::Invoke::Sync({
                fn __call(__args: &[u8], __out: &mut ::std::vec::Vec<u8>) -> #p::Written {
                    let (__target,): (#ty,) = #p::decode_args(__args)?;
                    #p::encode_result(&<#ty as ::multiproc::Target>::run(__target), __out)
                }
                __call
            }),
        } };
    }
    .into()
}

/// Registers a type whose methods a `Manager` can host and call for other
/// processes (Python's `BaseManager.register`), and generates its typed
/// proxy, `<Type>Proxy`, with an async method and a `blocking_` twin for
/// each `&self`/`&mut self` method. Put it on the type's inherent `impl`
/// block; arguments and results are owned serde values.
#[proc_macro_attribute]
pub fn hosted(attr: TokenStream, item: TokenStream) -> TokenStream {
    hosted::expand(attr.into(), item.into()).unwrap_or_else(|e| e.to_compile_error()).into()
}
