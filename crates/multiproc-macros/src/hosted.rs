//! `#[multiproc::hosted]`: a type the manager hosts, its method table and
//! its typed proxy.
//!
//! Expands to the `impl` block unchanged, plus: `HostedObject` (a `match`
//! from method name to a shim that decodes the argument tuple, calls the
//! method and encodes its result), `Hosted` (the name and the proxy type),
//! one entry in the `HOSTED` distributed slice (how the manager process,
//! the same binary, builds the type from its name), and `<Type>Proxy`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::{FnArg, ImplItem, ItemImpl, ReturnType, Type};

pub fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    if !attr.is_empty() {
        return Err(syn::Error::new(proc_macro2::Span::call_site(), "#[multiproc::hosted] takes no arguments"));
    }
    let imp: ItemImpl = syn::parse2(item)?;
    if imp.trait_.is_some() || !imp.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &imp.self_ty,
            "#[multiproc::hosted] goes on the inherent `impl Type { … }` block of a non-generic type",
        ));
    }
    let ty = &imp.self_ty;
    let type_ident = match &**ty {
        Type::Path(tp) => tp.path.segments.last().map(|s| s.ident.clone()),
        _ => None,
    }
    .ok_or_else(|| syn::Error::new_spanned(ty, "expected a named type"))?;
    let proxy = format_ident!("{}Proxy", type_ident);
    let static_name = format_ident!("__MULTIPROC_HOSTED_{}", type_ident.to_string().to_uppercase());
    let p = quote!(::multiproc::__private);

    let mut arms = Vec::new();
    let mut methods = Vec::new();
    for item in &imp.items {
        let ImplItem::Fn(f) = item else { continue };
        let sig = &f.sig;
        if !matches!(sig.inputs.first(), Some(FnArg::Receiver(r)) if r.reference.is_some()) {
            continue;
        }
        if sig.asyncness.is_some() || !sig.generics.params.is_empty() {
            return Err(syn::Error::new_spanned(sig, "a hosted method is a plain, non-generic fn"));
        }
        let name = &sig.ident;
        let name_str = name.to_string();
        let types: Vec<&Type> = sig
            .inputs
            .iter()
            .filter_map(|a| match a {
                FnArg::Typed(t) => Some(&*t.ty),
                FnArg::Receiver(_) => None,
            })
            .collect();
        let vars: Vec<_> = (0..types.len()).map(|i| format_ident!("__a{}", i)).collect();
        let ret = match &sig.output {
            ReturnType::Default => quote!(()),
            ReturnType::Type(_, t) => quote!(#t),
        };
        let blocking = format_ident!("blocking_{}", name);
        arms.push(quote! {
            #name_str => {
                let (#(#vars,)*): (#(#types,)*) = #p::hosted_decode_args(__method, __args)?;
                let __result: #ret = self.#name(#(#vars),*);
                #p::hosted_encode_result(__method, &__result)
            }
        });
        let doc = format!("Calls `{type_ident}::{name_str}` in the manager.");
        let blocking_doc = format!("Calls `{type_ident}::{name_str}` in the manager, from sync code.");
        methods.push(quote! {
            #[doc = #doc]
            pub async fn #name(&self, #(#vars: #types),*) -> ::multiproc::Result<#ret> {
                self.0.call(#name_str, &(#(#vars,)*)).await
            }

            #[doc = #blocking_doc]
            pub fn #blocking(&self, #(#vars: #types),*) -> ::multiproc::Result<#ret> {
                self.0.blocking_call(#name_str, &(#(#vars,)*))
            }
        });
    }

    let proxy_doc = format!("A proxy to a `{type_ident}` hosted by a manager (see `#[multiproc::hosted]`).");
    Ok(quote! {
        #imp

        impl ::multiproc::HostedObject for #ty {
            fn call(&mut self, __method: &str, __args: &[u8]) -> ::core::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                match __method {
                    #(#arms)*
                    _ => ::core::result::Result::Err(::std::format!(
                        "`{}` has no hosted method `{}`",
                        <#ty as ::multiproc::Hosted>::NAME,
                        __method
                    )),
                }
            }
        }

        impl ::multiproc::Hosted for #ty {
            type Proxy = #proxy;
            const NAME: &'static str = ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#type_ident));
        }

        #[doc(hidden)]
        #[#p::linkme::distributed_slice(#p::HOSTED)]
        #[linkme(crate = #p::linkme)]
        static #static_name: #p::Registered = #p::Registered { entry: &#p::HostedEntry {
            name: ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#type_ident)),
            create: #p::decode_init::<#ty>,
        } };

        #[doc = #proxy_doc]
        #[derive(Clone, Debug)]
        pub struct #proxy(::multiproc::HostedProxy);

        impl ::core::convert::From<::multiproc::HostedProxy> for #proxy {
            fn from(p: ::multiproc::HostedProxy) -> Self {
                Self(p)
            }
        }

        impl #p::serde::Serialize for #proxy {
            fn serialize<S: #p::serde::Serializer>(&self, s: S) -> ::core::result::Result<S::Ok, S::Error> {
                #p::serde::Serialize::serialize(&self.0, s)
            }
        }

        impl<'de> #p::serde::Deserialize<'de> for #proxy {
            fn deserialize<D: #p::serde::Deserializer<'de>>(d: D) -> ::core::result::Result<Self, D::Error> {
                <::multiproc::HostedProxy as #p::serde::Deserialize<'de>>::deserialize(d).map(Self)
            }
        }

        impl #proxy {
            #(#methods)*
        }
    })
}
