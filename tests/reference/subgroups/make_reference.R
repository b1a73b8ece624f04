# Frozen lme4 reference for the case-mix adjusted PHQ-9 slope differences of analytics/outcomes/subgroups.py
# (tests/test_subgroups_adjusted_slopes.py). Input: patients.csv and scores.csv beside this script (written by
# make_data.py). Run from the repository root:  Rscript tests/reference/subgroups/make_reference.R
#
# The model, for the subgrouping variable 'primary_substance' and the contrast 'ketamine + therapy' vs 'ketamine only':
#   phq9 ~ weeks * arm_level + weeks * (age + sex + baseline_phq9 + baseline_phq9_missing + site)
#          + (1 + weeks | patient_id), REML
# with arm_level = program | substance and the case mix coded as the dashboard documents it (substance left out):
#   * numeric (age, baseline PHQ-9): a missing value gets the mean of the patients of the two programs, plus a 0/1
#     missing indicator when at least 5 values are missing; centred at the mean over the patients in the model;
#   * categorical (sex, site): levels with fewer than 5 patients (and missing values) pooled with the most
#     common level; treatment coding against the most common level among the patients in the model.
# Each substance's slope difference (therapy - ketamine only) is a contrast of the weeks:arm_level coefficients; the
# interaction test is the joint Wald test that the six differences are equal (5 df).
suppressPackageStartupMessages({ library(lme4); library(jsonlite) })
dir <- "tests/reference/subgroups"
pts <- read.csv(file.path(dir, "patients.csv"), colClasses = c(patient_id = "character"))
sc <- read.csv(file.path(dir, "scores.csv"), colClasses = c(patient_id = "character"))
treated <- "ketamine + therapy"; control <- "ketamine only"
pts <- pts[pts$program %in% c(treated, control), ]

fill_numeric <- function(x) {
  miss <- is.na(x)
  x[miss] <- mean(x[!miss])
  list(value = x, missing = if (sum(miss) >= 5) as.numeric(miss) else NULL)
}
pool <- function(x) {
  counts <- table(x)
  counts <- counts[order(-counts, match(names(counts), unique(x)))]
  common <- names(counts)[counts >= 5]
  x[is.na(x) | !(x %in% common)] <- common[1]
  x
}
b <- fill_numeric(pts$baseline_phq9)
pts$baseline_phq9 <- b$value
pts$baseline_phq9_missing <- b$missing
pts$sex <- pool(pts$sex)
pts$site <- pool(pts$site)
pts$arm_level <- paste(pts$program, "|", pts$primary_substance)

d <- merge(sc, pts, by = "patient_id")
inmodel <- pts[pts$patient_id %in% d$patient_id, ]
for (v in c("age", "baseline_phq9", "baseline_phq9_missing")) d[[v]] <- d[[v]] - mean(inmodel[[v]])
most_common_first <- function(x) { n <- table(x); names(n)[order(-n, names(n))] }
for (v in c("sex", "site")) d[[v]] <- factor(d[[v]], levels = most_common_first(inmodel[[v]]))
levels_sorted <- sort(unique(pts$primary_substance))
reference <- paste(control, "|", levels_sorted[1])
d$arm_level <- factor(d$arm_level, levels = c(reference, setdiff(most_common_first(inmodel$arm_level), reference)))

ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhobeg = 2e-3, rhoend = 1e-12, maxfun = 1e5),
                    check.conv.singular = "ignore")
m <- lmer(phq9 ~ weeks * arm_level + weeks * age + weeks * sex + weeks * baseline_phq9 +
            weeks * baseline_phq9_missing + weeks * site + (1 + weeks | patient_id),
          data = d, REML = TRUE, control = ctrl)
fe <- fixef(m); V <- as.matrix(vcov(m))
C <- t(sapply(levels_sorted, function(s) {
  cc <- setNames(numeric(length(fe)), names(fe))
  for (g in c(treated, control)) {
    term <- paste0("weeks:arm_level", g, " | ", s)
    if (term %in% names(fe)) cc[term] <- cc[term] + if (g == treated) 1 else -1
  }
  cc
}))
est <- as.numeric(C %*% fe); se <- sqrt(diag(C %*% V %*% t(C)))
D <- C[-1, , drop = FALSE] - matrix(C[1, ], nrow = nrow(C) - 1, ncol = ncol(C), byrow = TRUE)
dd <- D %*% fe
chi2 <- as.numeric(t(dd) %*% solve(D %*% V %*% t(D), dd))
vc <- as.data.frame(VarCorr(m))
out <- list(
  R = R.version.string, lme4 = as.character(packageVersion("lme4")),
  fixed = as.list(fe), se = as.list(sqrt(diag(V))),
  theta = unname(getME(m, "theta")), sd_intercept = vc$sdcor[1], sd_slope = vc$sdcor[2], corr = vc$sdcor[3], sd_residual = sigma(m),
  reml_criterion = unname(getME(m, "devcomp")$cmp["REML"]), singular = isSingular(m),
  n_obs = nobs(m), n_groups = unname(ngrps(m)[1]),
  slope_difference = data.frame(level = levels_sorted, estimate = est, se = se),
  interaction_chisq = chi2, interaction_p = pchisq(chi2, nrow(D), lower.tail = FALSE))
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), file.path(dir, "reference.json"))
