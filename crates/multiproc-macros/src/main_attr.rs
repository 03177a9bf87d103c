//! `#[multiproc::main]`: `#[tokio::main]` with `multiproc::init()` as the
//! program's first line, before the runtime (and its threads) exist.

use proc_macro2::TokenStream;
use quote::quote;
use syn::ItemFn;

pub(crate) fn expand(args: TokenStream, func: ItemFn) -> syn::Result<TokenStream> {
    if func.sig.asyncness.is_none() {
        return Err(syn::Error::new_spanned(func.sig.fn_token, "#[multiproc::main] goes on an `async fn main`"));
    }
    let ItemFn { attrs, vis, mut sig, block } = func;
    let mut outer = sig.clone();
    outer.asyncness = None;
    sig.ident = syn::Ident::new("__multiproc_main", sig.ident.span());
    let inner = &sig.ident;
    let args = if args.is_empty() { quote!() } else { quote!(#args,) };
    Ok(quote! {
        #(#attrs)*
        #vis #outer {
            // A forkserver, worker or tracker copy of this binary takes its
            // role here (after every constructor and std's set-up) and never
            // returns; the program itself carries on.
            ::multiproc::init();
            #[::multiproc::__private::tokio::main(#args crate = "::multiproc::__private::tokio")]
            #sig #block
            #inner()
        }
    })
}
